"""movrec runs | artifacts | lineage | metrics | report: what the MLMD store holds."""

import json

from movrec import paths
from pipeline import config as config_lib


def _store(args):
  from pipeline import inspect_store  # pylint: disable=g-import-not-at-top
  return inspect_store, inspect_store.connect(paths.metadata_path(args), args.connection_config)


def _emit(args, data, text) -> int:
  print(json.dumps(data, indent=2, default=str) if args.json else text())
  return 0


def cell(value) -> str:
  if isinstance(value, float):
    return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
  return "" if value is None else str(value)


def plain_table(rows, columns) -> str:
  widths = {c: max([len(c)] + [len(cell(r.get(c))) for r in rows]) for c in columns}
  lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
  lines += ["  ".join(cell(r.get(c)).ljust(widths[c]) for c in columns) for r in rows]
  return "\n".join(lines)


def cmd_runs(args) -> int:
  lib, store = _store(args)
  rows = lib.runs(store, args.pipeline_name)
  return _emit(args, rows, lambda: plain_table(rows, [
      "run_id", "start", "duration_seconds", "status", "components", "executed", "cached",
      "failed"]))


def cmd_artifacts(args) -> int:
  lib, store = _store(args)
  rows = lib.artifacts(store, args.pipeline_name, run_id=args.run, type_name=args.type,
                       component=args.component)
  if not rows:
    raise lib.InspectError("no artifact matches those filters")

  def text():
    lines = []
    for r in rows:
      props = ", ".join(f"{k}={cell(v)[:60]}" for k, v in sorted(r["properties"].items())
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
    training = r.get("training") or {}
    return {"run_id": r["run_id"], "hr@10": ret.get("hr_at_10"),
            "ndcg@10": ret.get("ndcg_at_10"), "hr@100": ret.get("hr_at_100"),
            "pop_hr@10": popularity.get("hr_at_10"), "pop_ndcg@10": popularity.get("ndcg_at_10"),
            "retr_blessed": verdict(ret), "index_recall": idx.get("recall_at_10"),
            "index_blessed": verdict(idx), "rmse": rank.get("rmse"),
            "rank_blessed": verdict(rank),
            "2stage_ndcg@10": (r.get("two_stage") or {}).get("two_stage_ndcg_at_10"),
            "retr_order_ndcg@10": (r.get("two_stage") or {}).get("retrieval_order_ndcg_at_10"),
            "order_blessed": verdict(r.get("two_stage")),
            "retr_ratings/s": training.get("retrieval", {}).get("examples_per_second"),
            "rank_ratings/s": training.get("ranking", {}).get("examples_per_second"),
            "pushed": push.get("version") if push.get("pushed") else ("no" if push else "")}
  return _emit(args, rows, lambda: plain_table([flat(r) for r in rows], list(flat(rows[0]))))


def cmd_report(args) -> int:
  lib, store = _store(args)
  from pipeline import report  # pylint: disable=g-import-not-at-top
  run = lib.find_run(store, args.pipeline_name, args.run)
  print(report.write(store, args.pipeline_name, run.run_id, paths.report_path(args, run.run_id)))
  return 0


def add_parsers(sub) -> None:
  def store_args(p):
    p.add_argument("--output-dir", help=f"where `movrec run` wrote (default: "
                   f"${config_lib.ENV_OUTPUT_DIR} or ./outputs)")
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
