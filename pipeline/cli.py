"""movrec: the project's console tool.

  movrec run [--data-dir DIR]      run the pipeline locally (LocalDagRunner)
  movrec recommend --user 42 -k 10 recommend from the newest pushed bundle (--json)
  movrec similar --movie 50        movies nearest to a movie (--json)
  movrec serve [--port 8080]       HTTP service (POST /recommend, GET /similar, ...)
  movrec rollback VERSION          serve an older bundle version (--latest: the newest)
  movrec compile --image IMG ...   Kubeflow Pipelines v2 / Vertex AI pipeline JSON
  movrec submit | schedule ...     run it once / on a cron (--dry-run prints the request)
  movrec runs | artifacts | lineage ID | metrics     what the MLMD store holds (--json)
  movrec report [RUN]              a self-contained HTML page about a run
  movrec generate-data DIR         write synthetic MovieLens-shaped files (offline demo)
  movrec download [--dataset NAME] fetch and verify an official GroupLens archive

Data for `run`: --data-dir, else $MOVIELENS_DATA_DIR, else ml-100k in the download cache
(downloaded and verified on first use).
"""

import argparse
import json
import os
import sys
import time
from typing import List, Optional

# Before anything imports TensorFlow: Keras 2 for TFRS, and TensorFlow's C++ logs quiet.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from components.movielens_example_gen import download  # pylint: disable=g-import-not-at-top
from components.movielens_example_gen import layouts  # pylint: disable=g-import-not-at-top
from components.movielens_example_gen.splits import SPLIT_METHODS  # pylint: disable=g-import-not-at-top
from components.movielens_example_gen import synthetic  # pylint: disable=g-import-not-at-top
from pipeline import config as config_lib  # pylint: disable=g-import-not-at-top
from pipeline.errors import PipelineRunError, StoreInUseError  # pylint: disable=g-import-not-at-top


def resolve_data_dir(flag: Optional[str], dataset: str = download.DEFAULT_DATASET) -> str:
  """--data-dir, else $MOVIELENS_DATA_DIR, else the (downloaded) cached dataset."""
  data_dir = flag or os.environ.get(config_lib.ENV_DATA_DIR)
  if data_dir:
    source = "--data-dir" if flag else f"${config_lib.ENV_DATA_DIR}"
    if not os.path.isdir(data_dir) and "://" not in data_dir:
      raise layouts.MovieLensDataError(
          f"{data_dir} (from {source}) is not a directory.\n" +
          layouts.expected_files_message(data_dir))
    layouts.detect_layout(data_dir)
    return data_dir
  return download.download(dataset, progress=sys.stderr.isatty())


def _print_summary(result, config, seconds: float) -> None:
  run = result.run
  executed, cached = run.count("COMPLETE"), run.count("CACHED")
  examples = run.output("MovieLensExampleGen", "examples")
  candidates = run.output("MovieLensExampleGen", "candidates")
  props = examples.custom_properties

  def prop(name):
    value = props[name]
    return value.int_value if value.HasField("int_value") else value.string_value

  print(f"\nRun {run.run_id} finished in {seconds:.1f} s: {len(run.components)} components "
        f"({executed} executed, {cached} from cache).")
  print(f"  data        {config.data_dir} ({prop('movielens_layout')}, "
        f"{prop('split_method')} split)")
  print(f"  ratings     {prop('num_examples_train'):,} train / "
        f"{prop('num_examples_eval'):,} eval; catalogue "
        f"{candidates.custom_properties['num_examples_all'].int_value:,} movies")
  if prop("skipped_rows"):
    print(f"  SKIPPED     {prop('skipped_rows'):,} bad rows: {prop('skipped_rows_detail')}")
  print(f"  transform   {run.output('Transform', 'transform_graph').uri}")
  for line in _stage_one_lines(run):
    print(line)
  print(f"  artifacts   {config.pipeline_root}")
  print(f"  metadata    {config.metadata_path}")
  print(f"  full log    {result.log_path}")


def _props(artifact):
  from pipeline import run_summary  # pylint: disable=g-import-not-at-top
  return run_summary.artifact_properties(artifact)


def _verdict(blessing) -> str:
  props = _props(blessing)
  if props.get("blessed") == 1:
    return "BLESSED"
  return "NOT BLESSED" + (f" ({props['reasons']})" if props.get("reasons") else "")


def _stage_one_lines(run) -> List[str]:
  """Retrieval quality, index and push, from the run's artifacts."""
  lines = []
  try:
    evaluation = _props(run.output("RetrievalEvaluator", "evaluation"))
    lines.append(
        f"  retrieval   HR@10 {evaluation['hr_at_10']:.3f}, NDCG@10 "
        f"{evaluation['ndcg_at_10']:.3f}, HR@100 {evaluation['hr_at_100']:.3f} (popularity "
        f"{evaluation.get('popularity_hr_at_10', float('nan')):.3f} / "
        f"{evaluation.get('popularity_ndcg_at_10', float('nan')):.3f} / "
        f"{evaluation.get('popularity_hr_at_100', float('nan')):.3f}): "
        f"{_verdict(run.output('RetrievalEvaluator', 'blessing'))}")
    index = run.output("IndexBuilder", "index")
    info = _props(index)
    lines.append(
        f"  index       {info['search_mode']} over "
        f"{info['num_candidates']:,} movies: recall@10 vs exact "
        f"{info['recall_at_10']:.3f}, {info['queries_per_second']:,.0f} queries/s, built in "
        f"{info['build_seconds']:.2f} s: {_verdict(run.output('IndexBuilder', 'blessing'))}")
    from pipeline import ranking_eval_config  # pylint: disable=g-import-not-at-top
    overall = ranking_eval_config.load_metrics(run.output("RankingEvaluator", "evaluation").uri)[""]
    lines.append(
        f"  ranking     eval RMSE {overall[ranking_eval_config.RMSE]:.4f}, MAE "
        f"{overall[ranking_eval_config.MAE]:.4f} ({overall['example_count']:,.0f} ratings): "
        f"{_verdict(run.output('RankingEvaluator', 'blessing'))}")
    pushed = _props(run.output("BundlePusher", "pushed_model"))
    lines.append(f"  pushed      {pushed['pushed_destination']}" if pushed.get("pushed") else
                 f"  pushed      nothing: {pushed.get('not_pushed_reason')}")
  except KeyError:  # the run stopped before these components
    pass
  return lines


def _given(**values):
  """The flags the user passed (argparse default None): the rest keep PipelineConfig's
  defaults, which live only there."""
  return {name: value for name, value in values.items() if value is not None}


def cmd_run(args) -> int:
  data_dir = resolve_data_dir(args.data_dir)
  cfg = config_lib.PipelineConfig(
      data_dir=data_dir,
      output_dir=args.output_dir or os.environ.get(config_lib.ENV_OUTPUT_DIR,
                                                   config_lib.DEFAULT_OUTPUT_DIR),
      pipeline_name=args.pipeline_name, layout=args.layout,
      skip_bad_rows=args.skip_bad_rows,
      beam_mode=args.beam_mode, enable_cache=not args.no_cache,
      retrieval_hparams=_key_values(args.retrieval, "--retrieval"),
      **({"retrieval_thresholds": _key_values(args.retrieval_threshold, "--retrieval-threshold")}
         if args.retrieval_threshold else {}),
      ranking_hparams=_key_values(args.ranking, "--ranking"),
      span_pattern=args.span_pattern, rolling_spans=args.rolling_spans,
      warm_start=args.warm_start,
      **_given(split_method=args.split, eval_per_user=args.eval_per_user,
               train_fraction=args.train_fraction, split_seed=args.seed,
               temporal_cutoff=args.temporal_cutoff, index_min_recall=args.index_min_recall,
               ranking_rmse_bound=args.ranking_rmse_bound))
  print(f"Pipeline {cfg.pipeline_name}: {cfg.layout} data in {data_dir}; "
        f"Beam {cfg.beam_mode}; cache {'on' if cfg.enable_cache else 'off'}")
  from pipeline import progress  # pylint: disable=g-import-not-at-top
  # Importing TFX imports TensorFlow and the Google Cloud clients, which log and warn.
  with progress.stderr_to_file(os.path.join(cfg.log_dir, "imports.log")):
    from pipeline import local_runner  # pylint: disable=g-import-not-at-top
  started = time.monotonic()
  result = local_runner.run(cfg)
  _print_summary(result, cfg, time.monotonic() - started)
  return 0


def _key_values(pairs: Optional[List[str]], flag: str) -> dict:
  """["epochs=5", "hidden_layers=[128]"] -> {"epochs": 5, "hidden_layers": [128]} (JSON values)."""
  out = {}
  for pair in pairs or []:
    key, sep, value = pair.partition("=")
    if not sep:
      raise ValueError(f"{flag} {pair!r}: expected NAME=VALUE")
    try:
      out[key] = json.loads(value)
    except json.JSONDecodeError:
      out[key] = value
  return out


def _serving_dir(args) -> str:
  if args.serving_dir:
    return args.serving_dir
  output_dir = args.output_dir or os.environ.get(config_lib.ENV_OUTPUT_DIR,
                                                 config_lib.DEFAULT_OUTPUT_DIR)
  return os.path.join(os.path.abspath(output_dir), "serving", args.pipeline_name)


def _print_items(items, columns) -> None:
  widths = {"movie_id": 8, "title": 48, "genres": 28}
  print("  ".join(f"{c:<{widths.get(c, 10)}}" for c in ["#"] + columns))
  for rank, item in enumerate(items, 1):
    cells = [f"{rank:<10}"]
    for c in columns:
      value = item.get(c, "")
      if isinstance(value, float):
        text = f"{value:.3f}"
      elif isinstance(value, list):
        text = "|".join(value)
      else:
        text = str(value)
      width = widths.get(c, 10)
      cells.append(f"{text[:width]:<{width}}")
    print("  ".join(cells))


def _load_recommender(args):
  with _quiet_imports(args):
    from serving import recommender  # pylint: disable=g-import-not-at-top
  live = recommender.LiveRecommender(_serving_dir(args))  # newest valid (or pinned) version
  health = live.health()
  if health["status"] != "ok":
    print(f"warning: serving bundle {health['version']}: {health['reason']}", file=sys.stderr)
  return live.current


def _quiet_imports(args):
  from pipeline import progress  # pylint: disable=g-import-not-at-top
  output_dir = args.output_dir or os.environ.get(config_lib.ENV_OUTPUT_DIR,
                                                 config_lib.DEFAULT_OUTPUT_DIR)
  if "://" in output_dir:  # a cluster's bucket (compile): this machine's log stays local
    output_dir = config_lib.DEFAULT_OUTPUT_DIR
  return progress.stderr_to_file(os.path.join(output_dir, "logs", "serving-imports.log"))


def cmd_recommend(args) -> int:
  rec = _load_recommender(args)
  result = rec.recommend(args.user, k=args.k, candidates=args.candidates, as_of=args.as_of,
                         order_by=args.order_by)
  if args.json:
    print(json.dumps(result, indent=2))
    return 0
  as_of = f", as of {args.as_of}" if args.as_of is not None else ""
  print(f"user {args.user}: {result['path']} (bundle {result['version']}{as_of}, "
        f"ordered by {result.get('order_by', 'popularity')})")
  columns = ["movie_id", "title", "genres", "retrieval_score", "predicted_rating"]
  _print_items(result["items"], [c for c in columns
                                 if any(c in i for i in result["items"]) or c == "movie_id"])
  return 0


def cmd_similar(args) -> int:
  rec = _load_recommender(args)
  result = rec.similar(args.movie, k=args.k)
  if args.json:
    print(json.dumps(result, indent=2))
    return 0
  print(f"movies like {result['title']} ({args.movie}), bundle {result['version']}:")
  _print_items(result["items"], ["movie_id", "title", "genres", "score"])
  return 0


def cmd_serve(args) -> int:
  with _quiet_imports(args):
    from serving import http_service  # pylint: disable=g-import-not-at-top
  token = os.environ.get(config_lib.ENV_API_TOKEN)
  if args.token_file:
    with open(args.token_file) as f:
      token = f.read().strip()
  http_service.check_exposure(args.host, token)
  print(f"serving {_serving_dir(args)} on http://{args.host}:{args.port} "
        f"(POST /recommend, GET /similar, /healthz, /metadata, /metrics"
        f"{', /docs' if args.docs else ''}; {'bearer token required' if token else 'no token'})")
  http_service.serve(_serving_dir(args), host=args.host, port=args.port, token=token,
                     docs=args.docs)
  return 0


def cmd_rollback(args) -> int:
  from serving import bundle_layout  # pylint: disable=g-import-not-at-top
  serving_dir = _serving_dir(args)
  bundle_layout.pin(serving_dir, None if args.latest else args.version)
  if args.latest:
    print(f"{serving_dir}: unpinned; services move to the newest valid version")
  else:
    bundle_layout.verify(bundle_layout.version_dir(serving_dir, args.version))
    print(f"{serving_dir}: pinned version {args.version}; running services switch to it "
          "at their next poll (undo: movrec rollback --latest)")
  return 0


def cmd_compile(args) -> int:
  cfg = config_lib.PipelineConfig(
      data_dir=args.data_dir, output_dir=args.output_dir, pipeline_name=args.pipeline_name,
      layout=args.layout, user_demographics=args.demographics,
      extra_beam_args=tuple(args.beam_arg or ()),
      span_pattern=args.span_pattern, rolling_spans=args.rolling_spans,
      warm_start=args.warm_start, retrieval_hparams=_key_values(args.retrieval, "--retrieval"),
      ranking_hparams=_key_values(args.ranking, "--ranking"))
  with _quiet_imports(args):
    from kubeflow import runner  # pylint: disable=g-import-not-at-top
  compiled = runner.compile_pipeline(cfg, args.output, image=args.image)
  tasks = runner.component_ids(compiled)
  params = sorted(compiled["pipelineSpec"]["root"].get("inputDefinitions", {})
                  .get("parameters", {}))
  print(f"wrote {args.output} ({os.path.getsize(args.output):,} bytes): {len(tasks)} tasks, "
        f"image {args.image}, pipeline root {cfg.pipeline_root}")
  print(f"runtime parameters: {', '.join(params)}")
  return 0


def _cluster_request(args, cron=None):
  from kubeflow import runner  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(args.compiled):
    raise FileNotFoundError(f"{args.compiled} does not exist; run `movrec compile` first")
  target = runner.ClusterTarget(project=args.project, region=args.region,
                                kfp_host=args.kfp_host, service_account=args.service_account)
  with open(args.compiled) as f:
    root = json.load(f)["runtimeConfig"]["gcsOutputDirectory"]
  values = runner.parameter_values(_key_values(args.param, "--param"))
  return runner, runner.build_request(args.compiled, root, target, values, cron)


def _send(args, cron=None) -> int:
  with _quiet_imports(args):
    runner, request = _cluster_request(args, cron)
  if args.dry_run:
    print(json.dumps(request, indent=2))
    return 0
  print(f"submitted: {runner.send(request)}")
  return 0


def cmd_submit(args) -> int:
  return _send(args)


def cmd_schedule(args) -> int:
  return _send(args, cron=args.cron)


def _store(args):
  from pipeline import inspect_store  # pylint: disable=g-import-not-at-top
  output_dir = args.output_dir or os.environ.get(config_lib.ENV_OUTPUT_DIR,
                                                 config_lib.DEFAULT_OUTPUT_DIR)
  path = args.metadata or os.path.join(os.path.abspath(output_dir), "metadata",
                                       args.pipeline_name, "metadata.db")
  return inspect_store, inspect_store.connect(path, args.connection_config)


def _emit(args, data, text) -> int:
  print(json.dumps(data, indent=2, default=str) if args.json else text())
  return 0


def _plain_table(rows, columns) -> str:
  widths = {c: max([len(c)] + [len(_cell(r.get(c))) for r in rows]) for c in columns}
  lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
  lines += ["  ".join(_cell(r.get(c)).ljust(widths[c]) for c in columns) for r in rows]
  return "\n".join(lines)


def _cell(value) -> str:
  if isinstance(value, float):
    return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
  return "" if value is None else str(value)


def cmd_runs(args) -> int:
  lib, store = _store(args)
  rows = lib.runs(store, args.pipeline_name)
  return _emit(args, rows, lambda: _plain_table(rows, [
      "run_id", "start", "duration_seconds", "status", "components", "executed", "cached",
      "failed"]))


def cmd_artifacts(args) -> int:
  lib, store = _store(args)
  rows = lib.artifacts(store, args.pipeline_name, run_id=args.run, type_name=args.type,
                       component=args.component)
  if not rows:
    raise LookupError("no artifact matches those filters")

  def text():
    lines = []
    for r in rows:
      props = ", ".join(f"{k}={_cell(v)[:60]}" for k, v in sorted(r["properties"].items())
                        if k not in ("state", "tfx_version", "producer_component"))
      lines.append(f"{r['id']:>5}  {r['type']:<22} {r['producer'] or '':<28} {r['uri']}" +
                   (f"\n       {props}" if props else ""))
    return "\n".join(lines)
  return _emit(args, rows, text)


def cmd_lineage(args) -> int:
  lib, store = _store(args)
  data = lib.lineage(store, args.artifact_id)

  def text():
    a = data["artifact"]
    lines = [f"artifact {a['id']} ({a['type']}) {a['uri']}", "produced by:"]
    for e in data["produced_by"]:
      lines.append(f"  {e['component']} (execution {e['execution_id']}, {e['state']}) from:")
      lines += [f"    {i['key']}: {i['type']} {i['id']} {i['uri']}" for i in e["artifacts"]]
    lines.append("consumed by:" if data["consumed_by"] else "consumed by: nothing yet")
    for e in data["consumed_by"]:
      outs = ", ".join(f"{o['key']}:{o['id']}" for o in e["artifacts"])
      lines.append(f"  {e['component']} (execution {e['execution_id']}, {e['state']}) "
                   f"-> {outs}")
    return "\n".join(lines)
  return _emit(args, data, text)


def cmd_metrics(args) -> int:
  lib, store = _store(args)
  rows = lib.metrics(store, args.pipeline_name)

  def flat(r):
    ret, idx, rank, push = (r.get("retrieval") or {}, r.get("index") or {},
                            r.get("ranking") or {}, r.get("pushed") or {})
    verdict = lambda d: "" if not d else ("yes" if d.get("blessed") else "NO")
    popularity = ret.get("popularity") or {}
    return {"run_id": r["run_id"], "hr@10": ret.get("hr_at_10"),
            "ndcg@10": ret.get("ndcg_at_10"), "hr@100": ret.get("hr_at_100"),
            "pop_hr@10": popularity.get("hr_at_10"), "pop_ndcg@10": popularity.get("ndcg_at_10"),
            "retr_blessed": verdict(ret), "index_recall": idx.get("recall_at_10"),
            "index_blessed": verdict(idx), "rmse": rank.get("rmse"),
            "rank_blessed": verdict(rank),
            "pushed": push.get("version") if push.get("pushed") else ("no" if push else "")}
  return _emit(args, rows, lambda: _plain_table([flat(r) for r in rows], list(flat(rows[0]))))


def cmd_report(args) -> int:
  lib, store = _store(args)
  from pipeline import report  # pylint: disable=g-import-not-at-top
  run = lib.find_run(store, args.pipeline_name, args.run)
  path = args.out or os.path.join(os.path.dirname(args.metadata) if args.metadata else
                                  os.path.abspath(args.output_dir or config_lib.DEFAULT_OUTPUT_DIR),
                                  "reports", f"run-{run.run_id.replace(':', '')}.html")
  print(report.write(store, args.pipeline_name, run.run_id, path))
  return 0


def cmd_generate_data(args) -> int:
  out = synthetic.write_synthetic_movielens(
      args.out_dir, layout=args.layout, n_users=args.users, n_movies=args.movies,
      seed=args.seed)
  print(f"Wrote synthetic {args.layout} files to {out}")
  return 0


def cmd_download(args) -> int:
  path = download.download(args.dataset, cache_dir=args.cache_dir)
  print(path)
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="movrec", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)

  run = sub.add_parser("run", help="run the pipeline locally")
  run.add_argument("--data-dir", help=f"GroupLens MovieLens directory "
                   f"(default: ${config_lib.ENV_DATA_DIR}, else download ml-100k)")
  run.add_argument("--output-dir", help=f"where artifacts, metadata and logs go "
                   f"(default: ${config_lib.ENV_OUTPUT_DIR} or ./outputs)")
  run.add_argument("--pipeline-name", default=config_lib.DEFAULT_PIPELINE_NAME)
  run.add_argument("--layout", choices=sorted(layouts.LAYOUTS),
                   help="GroupLens layout (default: detected from the files)")
  defaults = config_lib.PipelineConfig.__dataclass_fields__
  run.add_argument("--split", choices=SPLIT_METHODS, help="last: each user's latest "
                   "ratings are eval (the next-item protocol); random: seeded 80/20 (the "
                   "seed tutorials'); temporal: a global time cutoff (default: "
                   f"{defaults['split_method'].default})")
  run.add_argument("--eval-per-user", type=int, help="split last: how many of each user's "
                   f"latest ratings are eval (default {defaults['eval_per_user'].default})")
  run.add_argument("--train-fraction", type=float, help="split random: share of ratings "
                   "in train; temporal: the time quantile of the cutoff "
                   f"(default {defaults['train_fraction'].default})")
  run.add_argument("--seed", type=int, help="seed of the random split "
                   f"(default {defaults['split_seed'].default})")
  run.add_argument("--temporal-cutoff", type=int,
                   help="unix seconds (temporal split); 0: the train-fraction time quantile")
  run.add_argument("--skip-bad-rows", action="store_true",
                   help="skip and count unusable rows instead of failing")
  run.add_argument("--beam-mode", choices=config_lib.BEAM_MODES,
                   default=config_lib.BEAM_IN_MEMORY)
  run.add_argument("--no-cache", action="store_true", help="re-execute every component")
  run.add_argument("--retrieval", action="append", metavar="NAME=VALUE",
                   help="retrieval hyperparameter (modules/hparams.py), e.g. epochs=5; repeatable")
  run.add_argument("--retrieval-threshold", action="append", metavar="METRIC=MIN",
                   help="bless the retrieval model only if METRIC >= MIN (replaces the "
                        "defaults), e.g. hr_at_10=0.15; repeatable")
  run.add_argument("--index-min-recall", type=float,
                   help="bless the index only if its recall@10 vs exact search reaches this")
  run.add_argument("--ranking", action="append", metavar="NAME=VALUE",
                   help="ranking hyperparameter (modules/hparams.py), e.g. epochs=8; repeatable")
  run.add_argument("--ranking-rmse-bound", type=float,
                   help="bless the ranking model only if its eval RMSE is below this")
  run.add_argument("--span-pattern", help="data in spans: sub-directories like "
                   "'span-{SPAN}' of --data-dir; the newest is ingested")
  run.add_argument("--rolling-spans", type=int, default=1,
                   help="train on the newest N spans (from MLMD)")
  run.add_argument("--warm-start", action="store_true",
                   help="start both Trainers from the last blessed models' weights")
  run.set_defaults(func=cmd_run)

  def serving_args(p):
    p.add_argument("--serving-dir", help="bundles directory (default: "
                   "<output-dir>/serving/<pipeline-name>)")
    p.add_argument("--output-dir")
    p.add_argument("--pipeline-name", default=config_lib.DEFAULT_PIPELINE_NAME)

  rec = sub.add_parser("recommend", help="top-k movies for a user from the newest bundle")
  rec.add_argument("--user", required=True)
  rec.add_argument("-k", type=int, default=10)
  rec.add_argument("--candidates", type=int, default=100,
                   help="retrieved before the ranking model predicts their ratings")
  rec.add_argument("--order-by", choices=["retrieval_score", "predicted_rating"],
                   default="retrieval_score", help="ordering of the top k (default: "
                   "retrieval score; predicted rating measured worse for next-item)")
  rec.add_argument("--as-of", type=int, metavar="UNIX_SECONDS", help="backtest: answer as "
                   "of this time, from the user's ratings made before it only")
  rec.add_argument("--json", action="store_true")
  serving_args(rec)
  rec.set_defaults(func=cmd_recommend)

  sim = sub.add_parser("similar", help="movies nearest to a movie (item-to-item)")
  sim.add_argument("--movie", required=True)
  sim.add_argument("-k", type=int, default=10)
  sim.add_argument("--json", action="store_true")
  serving_args(sim)
  sim.set_defaults(func=cmd_similar)

  srv = sub.add_parser("serve", help="HTTP recommendation service")
  srv.add_argument("--host", default="127.0.0.1", help="loopback by default")
  srv.add_argument("--port", type=int, default=8080)
  srv.add_argument("--token-file", help=f"file holding the bearer token callers must send "
                   f"(or set ${config_lib.ENV_API_TOKEN}); required to bind beyond loopback")
  srv.add_argument("--docs", action="store_true", help="serve the OpenAPI docs at /docs")
  serving_args(srv)
  srv.set_defaults(func=cmd_serve)

  rb = sub.add_parser("rollback", help="serve an older bundle version (pin), or the newest again")
  which = rb.add_mutually_exclusive_group(required=True)
  which.add_argument("version", nargs="?", type=int, help="the version to serve")
  which.add_argument("--latest", action="store_true", help="unpin: serve the newest valid")
  serving_args(rb)
  rb.set_defaults(func=cmd_rollback)

  comp = sub.add_parser("compile", help="compile for Kubeflow Pipelines v2 / Vertex AI")
  comp.add_argument("--output", default="pipeline.json")
  comp.add_argument("--image", required=True, help="the pipeline image (see Dockerfile)")
  comp.add_argument("--data-dir", required=True, help="e.g. gs://bucket/ml-100k (the "
                    "default of the data_dir runtime parameter)")
  comp.add_argument("--output-dir", required=True, help="e.g. gs://bucket/movrec: pipeline "
                    "root and serving bundles go under it")
  comp.add_argument("--pipeline-name", default=config_lib.DEFAULT_PIPELINE_NAME)
  comp.add_argument("--layout", required=True, choices=sorted(layouts.LAYOUTS))
  comp.add_argument("--demographics", action=argparse.BooleanOptionalAction, default=None,
                    help="the data has user demographics (default: read from the files)")
  comp.add_argument("--beam-arg", action="append", help="e.g. --beam-arg=--runner=DataflowRunner")
  comp.add_argument("--span-pattern", help="e.g. 'span-{SPAN}' (see `run --help`)")
  comp.add_argument("--rolling-spans", type=int, default=1)
  comp.add_argument("--warm-start", action="store_true",
                    help="start both Trainers from the last blessed models' weights")
  comp.add_argument("--retrieval", action="append", metavar="NAME=VALUE")
  comp.add_argument("--ranking", action="append", metavar="NAME=VALUE")
  comp.set_defaults(func=cmd_compile)

  def cluster_args(p):
    p.add_argument("--compiled", default="pipeline.json")
    p.add_argument("--project", help="Google Cloud project (Vertex AI Pipelines)")
    p.add_argument("--region", default="us-central1")
    p.add_argument("--kfp-host", help="a Kubeflow Pipelines endpoint instead of Vertex AI")
    p.add_argument("--service-account")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="runtime parameter value, e.g. data_dir=gs://b/ml-1m; repeatable")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and print the request; send nothing")
    p.add_argument("--output-dir", default=None)

  submit = sub.add_parser("submit", help="run the compiled pipeline once on a cluster")
  cluster_args(submit)
  submit.set_defaults(func=cmd_submit)
  schedule = sub.add_parser("schedule", help="run the compiled pipeline on a cron schedule")
  cluster_args(schedule)
  schedule.add_argument("--cron", required=True, help="e.g. '0 3 * * 1' (Mondays 03:00)")
  schedule.set_defaults(func=cmd_schedule)

  def store_args(p):
    p.add_argument("--output-dir", help="where `movrec run` wrote (default ./outputs)")
    p.add_argument("--pipeline-name", default=config_lib.DEFAULT_PIPELINE_NAME)
    p.add_argument("--metadata", help="a SQLite MLMD file (default: the local runs' store)")
    p.add_argument("--connection-config", help="a text-format ml_metadata ConnectionConfig "
                   "(e.g. MySQL) for a shared store")
    p.add_argument("--json", action="store_true")

  p_runs = sub.add_parser("runs", help="one line per pipeline run")
  store_args(p_runs)
  p_runs.set_defaults(func=cmd_runs)
  p_art = sub.add_parser("artifacts", help="artifacts with URI and properties")
  store_args(p_art)
  p_art.add_argument("--run", help="a run id (see `movrec runs`), or latest")
  p_art.add_argument("--type", help="e.g. Model, ModelBlessing, movrec.RetrievalIndex")
  p_art.add_argument("--component", help="producing component, e.g. RetrievalTrainer")
  p_art.set_defaults(func=cmd_artifacts)
  p_lin = sub.add_parser("lineage", help="what produced an artifact and what consumed it")
  store_args(p_lin)
  p_lin.add_argument("artifact_id", type=int)
  p_lin.set_defaults(func=cmd_lineage)
  p_met = sub.add_parser("metrics", help="model and index metrics of every run, side by side")
  store_args(p_met)
  p_met.set_defaults(func=cmd_metrics)
  p_rep = sub.add_parser("report", help="self-contained HTML report of a run")
  store_args(p_rep)
  p_rep.add_argument("run", nargs="?", default="latest")
  p_rep.add_argument("--out", help="the HTML file (default <output-dir>/reports/run-ID.html)")
  p_rep.set_defaults(func=cmd_report)

  gen = sub.add_parser("generate-data", help="write synthetic MovieLens-shaped files")
  gen.add_argument("out_dir")
  gen.add_argument("--layout", choices=sorted(layouts.LAYOUTS), default="ml-100k")
  gen.add_argument("--users", type=int, default=300)
  gen.add_argument("--movies", type=int, default=200)
  gen.add_argument("--seed", type=int, default=0)
  gen.set_defaults(func=cmd_generate_data)

  dl = sub.add_parser("download", help="download and verify a GroupLens archive")
  dl.add_argument("--dataset", default=download.DEFAULT_DATASET)
  dl.add_argument("--cache-dir", default=None)
  dl.set_defaults(func=cmd_download)
  return parser


def main(argv: Optional[List[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return args.func(args)
  except (layouts.MovieLensDataError, PipelineRunError, StoreInUseError, ValueError,
          FileNotFoundError, RuntimeError) as e:
    print(f"\nerror: {e}", file=sys.stderr)
    return 1
  except LookupError as e:  # unknown movie / user / run / artifact, empty store
    if isinstance(e, KeyError):
      print(f"\nerror: {e.args[0] if e.args else e}", file=sys.stderr)
      return 1
    print(f"\nerror: {e}", file=sys.stderr)
    return 1
  except KeyError as e:  # unknown movie / user in the serving commands
    print(f"\nerror: {e.args[0] if e.args else e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
