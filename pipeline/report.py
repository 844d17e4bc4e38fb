"""`movrec report RUN`: one self-contained HTML page about a pipeline run.

No external scripts, styles or fonts (it opens offline): the DAG and the trend charts are
inline SVG, tables are plain HTML. TFDV's own visualisation (Facets) loads its code from
the internet, so data statistics are summarised here from the same statistics protos.
"""

import html
import json
import os
from typing import Dict, List, Optional

from ml_metadata.proto import metadata_store_pb2

from pipeline import inspect_store
from pipeline import run_summary

_STATE_COLOURS = {"COMPLETE": "#2e7d32", "CACHED": "#1565c0", "FAILED": "#c62828"}
_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}
.ok{color:#2e7d32;font-weight:bold}.bad{color:#c62828;font-weight:bold}
.muted{color:#777}svg text{font-size:11px}
"""


def _e(value) -> str:
  return html.escape(str(value))


def _fmt(value) -> str:
  if isinstance(value, float):
    return f"{value:,.4f}" if abs(value) < 100 else f"{value:,.1f}"
  return _e(value if value is not None else "")


def _table(rows: List[Dict], columns: List[str]) -> str:
  head = "".join(f"<th>{_e(c)}</th>" for c in columns)
  body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>"
                 for r in rows)
  return f"<table><tr>{head}</tr>{body}</table>"


def _verdict(blessed: Optional[bool]) -> str:
  if blessed is None:
    return "<span class=muted>n/a</span>"
  return "<span class=ok>BLESSED</span>" if blessed else "<span class=bad>NOT BLESSED</span>"


def _dag_edges(store, run: run_summary.PipelineRun) -> List[tuple]:
  """(producer node, consumer node) pairs, from the artifacts the run's components share."""
  produced = {a.id: c.node_id for c in run.components for outs in c.outputs.values()
              for a in outs}
  context = store.get_context_by_type_and_name("pipeline_run", run.run_id)
  edges = set()
  nodes = run_summary.execution_nodes(store)
  executions = store.get_executions_by_context(context.id)
  for event in store.get_events_by_execution_ids([e.id for e in executions]):
    if event.type == metadata_store_pb2.Event.INPUT and event.artifact_id in produced:
      consumer = nodes.get(event.execution_id)
      if consumer and produced[event.artifact_id] != consumer:
        edges.add((produced[event.artifact_id], consumer))
  return sorted(edges)


def dag_svg(store, run: run_summary.PipelineRun) -> str:
  """Components in dependency layers, coloured by state, with durations."""
  edges = _dag_edges(store, run)
  names = [c.node_id for c in run.components]
  depth = {n: 0 for n in names}
  for _ in names:  # longest-path layering (the DAG is small)
    for a, b in edges:
      depth[b] = max(depth[b], depth[a] + 1)
  layers: Dict[int, List[str]] = {}
  for n in sorted(names):
    layers.setdefault(depth[n], []).append(n)
  box_w, box_h, gap_x, gap_y = 210, 40, 40, 22
  pos = {}
  for d, members in layers.items():
    for i, n in enumerate(members):
      pos[n] = (20 + d * (box_w + gap_x), 20 + i * (box_h + gap_y))
  width = 40 + (max(layers) + 1) * (box_w + gap_x)
  height = 40 + max(len(m) for m in layers.values()) * (box_h + gap_y)
  parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'role="img" aria-label="pipeline DAG">']
  for a, b in edges:
    (x1, y1), (x2, y2) = pos[a], pos[b]
    parts.append(f'<line x1="{x1 + box_w}" y1="{y1 + box_h / 2}" x2="{x2}" '
                 f'y2="{y2 + box_h / 2}" stroke="#999"/>')
  by_name = {c.node_id: c for c in run.components}
  for n, (x, y) in pos.items():
    c = by_name[n]
    colour = _STATE_COLOURS.get(c.state, "#6d6d6d")
    parts.append(f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6" '
                 f'fill="{colour}"><title>{_e(n)}: {_e(c.state)}</title></rect>'
                 f'<text x="{x + 8}" y="{y + 16}" fill="#fff">{_e(n[:30])}</text>'
                 f'<text x="{x + 8}" y="{y + 32}" fill="#fff">{_e(c.state.lower())} '
                 f'{c.seconds:.1f} s</text>')
  parts.append("</svg>")
  return "".join(parts)


def line_chart(title: str, points: List[tuple], lower_is_better: bool = False) -> str:
  """A small SVG line chart of (label, value) points."""
  points = [(label, v) for label, v in points if isinstance(v, (int, float))]
  if not points:
    return f"<p class=muted>{_e(title)}: no values yet</p>"
  w, h, pad = 360, 160, 34
  values = [v for _, v in points]
  lo, hi = min(values), max(values)
  span = (hi - lo) or (abs(hi) or 1.0) * 0.1
  lo, hi = lo - span * 0.1, hi + span * 0.1
  x = lambda i: pad + (w - 2 * pad) * (i / max(len(points) - 1, 1))
  y = lambda v: h - pad - (h - 2 * pad) * ((v - lo) / (hi - lo))
  path = " ".join(f"{'M' if i == 0 else 'L'}{x(i):.1f},{y(v):.1f}"
                  for i, (_, v) in enumerate(points))
  dots = "".join(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="#1565c0">'
                 f'<title>{_e(label)}: {v:.4f}</title></circle>'
                 for i, (label, v) in enumerate(points))
  note = "lower is better" if lower_is_better else "higher is better"
  return (f'<figure style="display:inline-block;margin:4px"><svg xmlns="http://www.w3.org/2000/svg" '
          f'width="{w}" height="{h}" role="img" aria-label="{_e(title)}">'
          f'<rect width="{w}" height="{h}" fill="#fafafa" stroke="#ddd"/>'
          f'<path d="{path}" fill="none" stroke="#1565c0" stroke-width="2"/>{dots}'
          f'<text x="{pad}" y="16">{_e(title)} ({note})</text>'
          f'<text x="4" y="{y(hi - span * 0.1) + 4:.0f}">{hi - span * 0.1:.3f}</text>'
          f'<text x="4" y="{y(lo + span * 0.1) + 4:.0f}">{lo + span * 0.1:.3f}</text>'
          f'</svg><figcaption class=muted>runs, oldest → newest</figcaption></figure>')


def _statistics_section(run: run_summary.PipelineRun) -> str:
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  try:
    stats = run.output("StatisticsGen", "statistics")
  except KeyError:
    return "<p class=muted>no statistics in this run</p>"
  out = []
  for split in json.loads(stats.properties["split_names"].string_value):
    path = os.path.join(stats.uri, f"Split-{split}", "FeatureStats.pb")
    if not os.path.exists(path):
      continue
    dataset = tfdv.load_stats_binary(path).datasets[0]
    rows = []
    for f in dataset.features:
      row = {"feature": f.path.step[0] if f.path.step else f.name}
      if f.HasField("num_stats"):
        s = f.num_stats
        row.update(kind="numeric", missing=s.common_stats.num_missing, mean=s.mean,
                   std=s.std_dev, min=s.min, max=s.max)
      elif f.HasField("string_stats"):
        s = f.string_stats
        top = ", ".join(v.value for v in s.top_values[:3])
        row.update(kind="string", missing=s.common_stats.num_missing, unique=s.unique,
                   top=top)
      rows.append(row)
    out.append(f"<h3>{_e(split)}: {dataset.num_examples:,} examples</h3>" +
               _table(rows, ["feature", "kind", "missing", "mean", "std", "min", "max",
                             "unique", "top"]))
  return "".join(out)


def _anomalies_section(run: run_summary.PipelineRun) -> str:
  from components.validation_gate.component import describe_anomalies  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  lines = []
  for node in ("ExampleValidator", "CandidateExampleValidator"):
    try:
      proto = run.output(node, "anomalies")
    except KeyError:
      continue
    artifact = standard_artifacts.ExampleAnomalies()
    artifact.uri = proto.uri
    artifact.split_names = proto.properties["split_names"].string_value
    lines += [f"{node}: {line}" for line in describe_anomalies(artifact)]
  if not lines:
    return "<p class=ok>No anomalies against the curated schemas.</p>"
  return "<ul>" + "".join(f"<li class=bad>{_e(line)}</li>" for line in lines) + "</ul>"


def _retrieval_section(run) -> str:
  try:
    uri = run.output("RetrievalEvaluator", "evaluation").uri
  except KeyError:
    return "<p class=muted>no retrieval evaluation in this run</p>"
  with open(os.path.join(uri, "metrics.json")) as f:
    result = json.load(f)
  names = [k for k, v in result["model"]["metrics"].items() if isinstance(v, float)]
  rows = [{"metric": n, "model": result["model"]["metrics"][n],
           "popularity": (result.get("popularity") or {}).get(n),
           "last blessed": (result["baseline"] or {}).get("metrics", {}).get(n),
           "minimum": result["thresholds"].get(n)} for n in names]
  return (f"<p>{_verdict(result['blessed'])}: {_e('; '.join(result['reasons']))}</p>"
          "<p class=muted>hr_at_k / ndcg_at_10: each eval rating ranked against the whole "
          "catalogue, the movies the user had rated by then removed, the query seeing only "
          "earlier ratings; top_k: nothing removed. Popularity: rating counts before each eval "
          "rating, computed in the same execution.</p>" +
          _table(rows, ["metric", "model", "popularity", "last blessed", "minimum"]))


def _ranking_section(run) -> str:
  from pipeline import ranking_eval_config  # pylint: disable=g-import-not-at-top
  try:
    evaluation = run.output("RankingEvaluator", "evaluation")
  except KeyError:
    return "<p class=muted>no ranking evaluation in this run</p>"
  by_slice = ranking_eval_config.load_metrics(evaluation.uri)
  blessing = run_summary.artifact_properties(run.output("RankingEvaluator", "blessing"))
  rows = [{"slice": name or "overall", "RMSE": m.get(ranking_eval_config.RMSE),
           "MAE": m.get(ranking_eval_config.MAE), "ratings": m.get("example_count")}
          for name, m in sorted(by_slice.items())]
  return (f"<p>{_verdict(bool(blessing.get('blessed')))} (TFX Evaluator: RMSE bound and "
          f"change against the last blessed ranking model)</p>" +
          _table(rows, ["slice", "RMSE", "MAE", "ratings"]))


def _two_stage_section(run) -> str:
  from components.two_stage_evaluator import executor as two_stage  # pylint: disable=g-import-not-at-top
  try:
    uri = run.output("TwoStageEvaluator", "evaluation").uri
  except KeyError:
    return "<p class=muted>no two-stage evaluation in this run</p>"
  with open(os.path.join(uri, two_stage.METRICS_FILE)) as f:
    result = json.load(f)
  metrics = result["metrics"]
  rows = [{"metric": name,
           "retrieval order": metrics.get(f"retrieval_order_{name}"),
           "scorer alone": metrics.get(f"sequence_scorer_{name}"),
           "two-stage": metrics.get(f"two_stage_{name}"),
           "ratio": metrics.get(f"two_stage_{name}_ratio"),
           "95% interval": (f"{metrics[f'two_stage_{name}_ratio_low']:.3f}-"
                            f"{metrics[f'two_stage_{name}_ratio_high']:.3f}"
                            if f"two_stage_{name}_ratio_low" in metrics else None)}
          for name in ("hr_at_10", "ndcg_at_10")] if metrics else []
  by_history = [{"movies rated before": name.split("=", 1)[1],
                 "eval ratings": figures.get("eval_ratings"),
                 **{f"{label} {metric}": figures.get(f"{order}_{metric}_at_10")
                    for label, order in (("retrieval order", "retrieval_order"),
                                         ("two-stage", "two_stage"))
                    for metric in ("hr", "ndcg")}}
                for name, figures in _history_order(result.get("slices") or {})]
  return (f"<p>{_verdict(result['blessed'])} as serving's default order: "
          f"{_e('; '.join(result['reasons']))}</p>"
          f"<p class=muted>each eval rating's {_fmt(metrics.get('candidates'))} retrieved "
          "candidates (the movies rated by then removed), as retrieved and as ordered by "
          "ranking score (the sequence scorer blended with the retrieval score; the scorer "
          "alone is shown, not gated); HR@10 and "
          "NDCG@10 by TFMA, each eval rating a query; the interval is a paired bootstrap "
          "over the eval ratings.</p>" +
          _table(rows, ["metric", "retrieval order", "scorer alone", "two-stage", "ratio",
                        "95% interval"]) +
          (_table(by_history, list(by_history[0])) if by_history else ""))


def _history_order(slices: Dict) -> List[tuple]:
  """The history-length slices, shortest history first."""
  from components.two_stage_evaluator import tfma_lists  # pylint: disable=g-import-not-at-top
  ranks = {tfma_lists.slice_name(name): i for i, (_, name) in
           enumerate(tfma_lists.HISTORY_BUCKETS)}
  return sorted(((n, f) for n, f in slices.items() if n in ranks), key=lambda x: ranks[x[0]])


def render(store, pipeline_name: str, run_id: Optional[str]) -> str:
  """The report's HTML for one run (run_id None / 'latest': the newest)."""
  run = inspect_store.find_run(store, pipeline_name, run_id)
  summary = next(r for r in inspect_store.runs(store, pipeline_name) if r["run_id"] == run.run_id)
  history = inspect_store.metrics(store, pipeline_name)
  this = next(r for r in history if r["run_id"] == run.run_id)
  index = this.get("index") or {}
  pushed = this.get("pushed") or {}
  trends = "".join([
      line_chart("retrieval HR@10", [(r["run_id"], (r.get("retrieval") or {}).get(
          "hr_at_10")) for r in history]),
      line_chart("retrieval NDCG@10", [(r["run_id"], (r.get("retrieval") or {}).get(
          "ndcg_at_10")) for r in history]),
      line_chart("ranking RMSE", [(r["run_id"], (r.get("ranking") or {}).get("rmse"))
                                  for r in history], lower_is_better=True),
      line_chart("two-stage NDCG@10", [(r["run_id"], (r.get("two_stage") or {}).get(
          "two_stage_ndcg_at_10")) for r in history]),
      line_chart("index recall@10", [(r["run_id"], (r.get("index") or {}).get("recall_at_10"))
                                     for r in history]),
  ])
  component_rows = [{"component": c.node_id, "state": c.state, "seconds": c.seconds,
                     "outputs": ", ".join(f"{k}:{a.id}" for k, v in c.outputs.items()
                                          for a in v)} for c in run.components]
  push_text = (f"<p class=ok>pushed version {_e(pushed.get('version'))} to "
               f"{_e(pushed.get('destination'))}</p>" if pushed.get("pushed") else
               f"<p class=bad>nothing pushed: {_e(pushed.get('reason'))}</p>" if pushed else
               "<p class=muted>no push step in this run</p>")
  return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(pipeline_name)} run {_e(run.run_id)}</title>
<style>{_STYLE}</style></head>
<body data-rendered="no">
<h1>{_e(pipeline_name)}: run {_e(run.run_id)}</h1>
<p>started {_e(summary['start'])} UTC, {summary['duration_seconds']} s, <b>{_e(summary['status'])}</b>:
{summary['executed']} executed, {summary['cached']} from cache, {summary['failed']} failed.</p>
<h2>Pipeline</h2>{dag_svg(store, run)}
<p class=muted>green: executed, blue: from cache, red: failed</p>
{_table(component_rows, ["component", "state", "seconds", "outputs"])}
<h2>Data</h2>{_anomalies_section(run)}{_statistics_section(run)}
<h2>Retrieval evaluation</h2>{_retrieval_section(run)}
<h2>Index</h2>
<p>{_verdict(index.get('blessed') if index else None)} {_e(index.get('search_mode', ''))} over
{_fmt(index.get('num_candidates'))} movies: recall@10 against exact search {_fmt(index.get('recall_at_10'))},
{_fmt(index.get('queries_per_second'))} queries/s, built in {_fmt(index.get('build_seconds'))} s.</p>
<h2>Ranking evaluation</h2>{_ranking_section(run)}
<h2>Two-stage evaluation</h2>{_two_stage_section(run)}
<h2>Push</h2>{push_text}
<h2>Across runs</h2>{trends}
<script>
  // Marks the page as fully rendered (the report test checks it in headless Chromium).
  document.body.dataset.rendered = document.querySelectorAll("svg").length > 0 ? "ok" : "no";
</script>
</body></html>"""


def write(store, pipeline_name: str, run_id: Optional[str], path: str) -> str:
  page = render(store, pipeline_name, run_id)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(page)
  os.replace(tmp, path)
  return path
