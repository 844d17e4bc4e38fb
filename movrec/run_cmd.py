"""movrec run | generate-data | download: the local pipeline run and its data."""

import os
import sys
import time
from typing import List, Optional

from components.movielens_example_gen import download
from components.movielens_example_gen import layouts
from components.movielens_example_gen import synthetic
from components.movielens_example_gen.splits import SPLIT_METHODS
from movrec import paths
from pipeline import config as config_lib


def resolve_data_dir(flag: Optional[str], dataset: str = download.DEFAULT_DATASET,
                     span_pattern: Optional[str] = None) -> str:
  """--data-dir, else $MOVIELENS_DATA_DIR, else the (downloaded) cached dataset.

  With `span_pattern` the directory holds spans, not a release: PipelineConfig checks the
  newest span's files."""
  data_dir = flag or os.environ.get(config_lib.ENV_DATA_DIR)
  if data_dir:
    source = "--data-dir" if flag else f"${config_lib.ENV_DATA_DIR}"
    if not os.path.isdir(data_dir) and "://" not in data_dir:
      raise layouts.MovieLensDataError(
          f"{data_dir} (from {source}) is not a directory.\n" +
          layouts.expected_files_message(data_dir))
    if not span_pattern:
      layouts.detect_layout(data_dir)
    return data_dir
  return download.download(dataset, progress=sys.stderr.isatty())


def _verdict(stage: dict) -> str:
  if stage.get("blessed"):
    return "BLESSED"
  return "NOT BLESSED" + (f" ({stage['reasons']})" if stage.get("reasons") else "")


def _span_note(examples: dict, config) -> str:
  if not config.span_pattern:
    return ""
  window = (f", trained on the newest {config.rolling_spans}"
            if config.rolling_spans > 1 else "")
  return f"; span {examples.get('span')}{window}"


def summary_lines(result, config, seconds: float) -> List[str]:
  """The run's closing lines: what it read, what each stage measured and decided (from
  MLMD, as pipeline/inspect_store.py reads it), where everything is."""
  from pipeline import inspect_store  # pylint: disable=g-import-not-at-top
  run = result.run
  examples = inspect_store.run_summary.artifact_properties(
      run.output("MovieLensExampleGen", "examples"))
  catalogue = inspect_store.run_summary.artifact_properties(
      run.output("MovieLensExampleGen", "candidates"))
  lines = [
      f"\nRun {run.run_id} finished in {seconds:.1f} s: {len(run.components)} components "
      f"({run.count('COMPLETE')} executed, {run.count('CACHED')} from cache).",
      f"  data        {config.data_dir} ({examples['movielens_layout']}, "
      f"{examples['split_method']} split{_span_note(examples, config)})",
      f"  ratings     {examples['num_examples_train']:,} train / "
      f"{examples['num_examples_eval']:,} eval; catalogue {catalogue['num_examples_all']:,} movies"]
  if examples.get("skipped_rows"):
    lines.append(f"  SKIPPED     {examples['skipped_rows']:,} bad rows: "
                 f"{examples['skipped_rows_detail']}")
  lines.append(f"  transform   {run.output('Transform', 'transform_graph').uri}")
  stages = inspect_store.run_metrics(run)
  if "retrieval" in stages:
    r, p = stages["retrieval"], stages["retrieval"]["popularity"]
    lines.append(f"  retrieval   HR@10 {r['hr_at_10']:.3f}, NDCG@10 {r['ndcg_at_10']:.3f}, HR@100 "
                 f"{r['hr_at_100']:.3f} (popularity {p['hr_at_10']:.3f} / {p['ndcg_at_10']:.3f} / "
                 f"{p['hr_at_100']:.3f}): {_verdict(r)}")
  if "index" in stages:
    i = stages["index"]
    lines.append(f"  index       {i['search_mode']} over {i['num_candidates']:,} movies: recall@10 "
                 f"vs exact {i['recall_at_10']:.3f}, {i['queries_per_second']:,.0f} queries/s, "
                 f"built in {i['build_seconds']:.2f} s: {_verdict(i)}")
  if "ranking" in stages:
    k = stages["ranking"]
    lines.append(f"  ranking     eval RMSE {k['rmse']:.4f}, MAE {k['mae']:.4f} "
                 f"({k['example_count']:,.0f} ratings): {_verdict(k)}")
  if "two_stage" in stages:
    t = stages["two_stage"]
    figures = (f"NDCG@10 {t['two_stage_ndcg_at_10']:.3f} ordered by ranking score vs "
               f"{t['retrieval_order_ndcg_at_10']:.3f} as retrieved (HR@10 "
               f"{t['two_stage_hr_at_10']:.3f} vs {t['retrieval_order_hr_at_10']:.3f}), "
               if t.get("two_stage_ndcg_at_10") is not None else "")
    available = t.get("eval_ratings_available")
    if figures and available and available > t.get("eval_ratings", available):
      figures += f"on {t['eval_ratings']:,.0f} of {available:,.0f} eval ratings, "
    lines.append(f"  two-stage   {figures}the default order: {_verdict(t)}")
  for stage, t in stages.get("training", {}).items():
    feeding = f", {t['feeding']}" if t.get("feeding") else ""
    lines.append(f"  training    {stage}: {t['train_examples']:,} ratings, {t['epochs']} epochs "
                 f"in {t['train_seconds']:.0f} s: {t['examples_per_second']:,.0f} ratings/s"
                 f"{feeding}")
    scorer = t.get("sequence_scorer") or {}
    if scorer.get("train_seconds") is not None:
      lines.append(f"  training    sequence scorer: {scorer['epochs_run']} epochs in "
                   f"{scorer['train_seconds']:.0f} s, kept epoch {scorer['best_epoch']} (best "
                   "validation NDCG@10)")
    elif scorer.get("skipped"):
      lines.append(f"  training    sequence scorer: not trained: {scorer['skipped']}")
  if "pushed" in stages:
    pushed = stages["pushed"]
    lines.append(f"  pushed      {pushed['destination']}" if pushed["pushed"] else
                 f"  pushed      nothing: {pushed['reason']}")
  lines += [f"  artifacts   {config.pipeline_root}",
            f"  metadata    {config.metadata_connection_file or config.metadata_path}",
            f"  full log    {result.log_path}"]
  return lines


def config_from_args(args, data_dir: str) -> config_lib.PipelineConfig:
  """The run's configuration: PipelineConfig's defaults, overridden only by flags given."""
  retrieval_thresholds = paths.key_values(args.retrieval_threshold, "--retrieval-threshold")
  return config_lib.PipelineConfig(
      data_dir=data_dir, output_dir=paths.output_dir(args),
      pipeline_name=args.pipeline_name, layout=args.layout,
      skip_bad_rows=args.skip_bad_rows, enable_cache=not args.no_cache,
      retrieval_hparams=paths.key_values(args.retrieval, "--retrieval"),
      ranking_hparams=paths.key_values(args.ranking, "--ranking"),
      span_pattern=args.span_pattern, warm_start=args.warm_start,
      metadata_connection_file=args.connection_config,
      **paths.given(split_method=args.split, eval_per_user=args.eval_per_user,
                    train_fraction=args.train_fraction, split_seed=args.seed,
                    temporal_cutoff=args.temporal_cutoff,
                    index_min_recall=args.index_min_recall,
                    ranking_rmse_bound=args.ranking_rmse_bound, beam_mode=args.beam_mode,
                    executors=args.executors,
                    rolling_spans=args.rolling_spans,
                    retrieval_thresholds=retrieval_thresholds or None))


def run_config(args) -> config_lib.PipelineConfig:
  """`movrec run`'s configuration: its data directory found and checked, then its flags."""
  return config_from_args(args, resolve_data_dir(args.data_dir,
                                                 span_pattern=args.span_pattern))


def cmd_run(args) -> int:
  cfg = run_config(args)
  print(f"Pipeline {cfg.pipeline_name}: {cfg.layout} data in {cfg.layout_dir}; "
        f"Beam {cfg.beam_mode}; cache {'on' if cfg.enable_cache else 'off'}; executors in "
        f"{'child processes' if cfg.executors_in_child_processes() else 'this process'}")
  with paths.quiet_imports(args):  # TFX imports TensorFlow and the Cloud clients, which log
    from pipeline import local_runner  # pylint: disable=g-import-not-at-top
  started = time.monotonic()
  result = local_runner.run(cfg)
  print("\n".join(summary_lines(result, cfg, time.monotonic() - started)))
  return 0


def cmd_generate_data(args) -> int:
  out = synthetic.write_synthetic_movielens(
      args.out_dir, layout=args.layout, n_users=args.users, n_movies=args.movies,
      seed=args.seed)
  print(f"Wrote synthetic {args.layout} files to {out}")
  return 0


def cmd_download(args) -> int:
  print(download.download(args.dataset, cache_dir=args.cache_dir))
  return 0


def add_parsers(sub) -> None:
  defaults = config_lib.PipelineConfig.__dataclass_fields__
  default = lambda name: defaults[name].default
  run = sub.add_parser("run", help="run the pipeline locally")
  run.add_argument("--data-dir", help=f"GroupLens MovieLens directory "
                   f"(default: ${config_lib.ENV_DATA_DIR}, else download ml-100k)")
  run.add_argument("--output-dir", help=f"where artifacts, metadata and logs go "
                   f"(default: ${config_lib.ENV_OUTPUT_DIR} or ./outputs)")
  run.add_argument("--pipeline-name", default=config_lib.DEFAULT_PIPELINE_NAME)
  run.add_argument("--connection-config", metavar="FILE", help="a shared ML Metadata store "
                   "(text-format ConnectionConfig, e.g. MySQL) instead of the SQLite file "
                   "under --output-dir")
  run.add_argument("--layout", choices=sorted(layouts.LAYOUTS),
                   help="GroupLens layout (default: detected from the files)")
  run.add_argument("--split", choices=SPLIT_METHODS, help="last: each user's latest "
                   "ratings are eval (the next-item protocol); random: seeded 80/20 (the "
                   f"seed tutorials'); temporal: a global time cutoff (default: "
                   f"{default('split_method')})")
  run.add_argument("--eval-per-user", type=int, help="split last: how many of each user's "
                   f"latest ratings are eval (default {default('eval_per_user')})")
  run.add_argument("--train-fraction", type=float, help="split random: share of ratings "
                   "in train; temporal: the time quantile of the cutoff "
                   f"(default {default('train_fraction')})")
  run.add_argument("--seed", type=int, help="seed of the random split "
                   f"(default {default('split_seed')})")
  run.add_argument("--temporal-cutoff", type=int,
                   help="unix seconds (temporal split); 0: the train-fraction time quantile")
  run.add_argument("--skip-bad-rows", action="store_true",
                   help="skip and count unusable rows instead of failing")
  run.add_argument("--beam-mode", choices=config_lib.BEAM_MODES,
                   help=f"default {default('beam_mode')}")
  run.add_argument("--executors", choices=config_lib.EXECUTOR_MODES,
                   help="where each component's executor runs: a child process each (memory "
                   "returned after every component), the runner's process, or auto: child "
                   f"processes from a {config_lib.CHILD_PROCESSES_FROM_BYTES // 1_000_000} MB "
                   f"ratings file (default {default('executors')})")
  run.add_argument("--no-cache", action="store_true", help="re-execute every component")
  run.add_argument("--retrieval", action="append", metavar="NAME=VALUE",
                   help="retrieval hyperparameter (modules/hparams.py), e.g. epochs=5; repeatable")
  run.add_argument("--retrieval-threshold", action="append", metavar="METRIC=MIN",
                   help="bless the retrieval model only if METRIC >= MIN (replaces the "
                        "defaults), e.g. hr_at_10=0.15; repeatable")
  run.add_argument("--index-min-recall", type=float, help="bless the index only if its "
                   f"recall@10 vs exact search reaches this (default {default('index_min_recall')})")
  run.add_argument("--ranking", action="append", metavar="NAME=VALUE",
                   help="ranking hyperparameter (modules/hparams.py), e.g. epochs=8; repeatable")
  run.add_argument("--ranking-rmse-bound", type=float, help="bless the ranking model only "
                   f"if its eval RMSE is below this (default {default('ranking_rmse_bound')})")
  run.add_argument("--span-pattern", help="data in spans: sub-directories like "
                   "'span-{SPAN}' of --data-dir; the newest is ingested")
  run.add_argument("--rolling-spans", type=int, help="train on the newest N spans (from "
                   f"MLMD; default {default('rolling_spans')})")
  run.add_argument("--warm-start", action="store_true",
                   help="start both Trainers from the last blessed models' weights")
  run.set_defaults(func=cmd_run)

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
