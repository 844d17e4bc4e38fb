"""Questions an engineer asks of the ML Metadata store, answered as plain dicts.

Used by the `movrec runs | artifacts | lineage | metrics | report` commands. Every answer
is read from MLMD (and, for metrics, from the evaluation artifacts MLMD points to).
"""

import datetime
import os
from typing import Dict, List, Optional

from ml_metadata.proto import metadata_store_pb2

from bundle import contract
from modules.errors import MovrecError
from pipeline import metadata_store
from pipeline import run_summary

class InspectError(MovrecError, LookupError):
  """A bad id, an unknown run, or an empty store; the message says which."""


def connect(metadata_path: Optional[str] = None, connection_config_file: Optional[str] = None):
  """A store from a SQLite file (read-only), or from a text-format ConnectionConfig (MySQL,
  ...)."""
  if connection_config_file:
    config = metadata_store.load_connection_config(connection_config_file)
  else:
    if not metadata_path or not os.path.isfile(metadata_path):
      raise InspectError(f"no metadata store at {metadata_path}; run the pipeline first "
                         f"(`movrec run`) or pass --metadata / --connection-config")
    config = metadata_store.sqlite_config(metadata_path, writable=False)
  return metadata_store.open_store(config)


def _iso(ms: int) -> str:
  return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime(
      "%Y-%m-%d %H:%M:%S")


def _run_status(run: run_summary.PipelineRun) -> str:
  states = {c.state for c in run.components}
  if states & {"FAILED", "CANCELED"}:  # CANCELED: abandoned by a killed run (abandoned.py)
    return "FAILED"
  if states <= {"COMPLETE", "CACHED"}:
    return "COMPLETE"
  return "RUNNING"


def _pipeline_runs(store, pipeline_name) -> List[run_summary.PipelineRun]:
  found = run_summary.pipeline_runs(store, pipeline_name)
  if not found:
    raise InspectError(f"the metadata store has no run of pipeline {pipeline_name!r}")
  return found


def runs(store, pipeline_name: str) -> List[Dict]:
  """One entry per pipeline run, oldest first."""
  out = []
  for run in _pipeline_runs(store, pipeline_name):
    executions = store.get_executions_by_context(
        store.get_context_by_type_and_name("pipeline_run", run.run_id).id)
    start = min(e.create_time_since_epoch for e in executions)
    end = max(e.last_update_time_since_epoch for e in executions)
    out.append({"run_id": run.run_id, "start": _iso(start),
                "duration_seconds": round((end - start) / 1000, 1),
                "status": _run_status(run), "components": len(run.components),
                "executed": run.count("COMPLETE"), "cached": run.count("CACHED"),
                "failed": run.count("FAILED")})
  return out


def find_run(store, pipeline_name: str, run_id: Optional[str]) -> run_summary.PipelineRun:
  """The run called run_id ('latest' or None: the newest)."""
  found = _pipeline_runs(store, pipeline_name)
  if run_id in (None, "latest"):
    return found[-1]
  for run in found:
    if run.run_id == run_id:
      return run
  raise InspectError(f"no run {run_id!r}; known runs: {[r.run_id for r in found[-5:]]} "
                     f"(see `movrec runs`)")


def _producers(store) -> Dict[int, str]:
  """artifact id -> the node id of the execution that output it."""
  producer = {}
  node_of = run_summary.execution_nodes(store)
  for event in store.get_events_by_execution_ids(list(node_of)):
    if event.type == metadata_store_pb2.Event.OUTPUT:
      producer.setdefault(event.artifact_id, node_of[event.execution_id])
  return producer


def artifacts(store, pipeline_name: str, run_id: Optional[str] = None,
              type_name: Optional[str] = None, component: Optional[str] = None) -> List[Dict]:
  """Artifacts (filtered by run, type, producing component), oldest first."""
  if run_id:
    run = find_run(store, pipeline_name, run_id)
    ids = {a.id for c in run.components for outs in c.outputs.values() for a in outs}
    found = store.get_artifacts_by_id(sorted(ids))
  else:
    found = store.get_artifacts()
  if not found:
    raise InspectError("the metadata store has no artifacts")
  types = {t.id: t.name for t in store.get_artifact_types()}
  producers = _producers(store)
  out = []
  for a in sorted(found, key=lambda a: a.id):
    entry = {"id": a.id, "type": types[a.type_id], "producer": producers.get(a.id),
             "uri": a.uri, "created": _iso(a.create_time_since_epoch),
             "properties": run_summary.artifact_properties(a)}
    if type_name and entry["type"] != type_name:
      continue
    if component and entry["producer"] != component:
      continue
    out.append(entry)
  return out


def lineage(store, artifact_id: int) -> Dict:
  """Which execution produced the artifact (and from which inputs), and what consumed it."""
  found = store.get_artifacts_by_id([artifact_id])
  if not found:
    raise InspectError(f"no artifact with id {artifact_id} (see `movrec artifacts`)")
  artifact = found[0]
  types = {t.id: t.name for t in store.get_artifact_types()}
  events = store.get_events_by_artifact_ids([artifact_id])
  nodes = run_summary.execution_nodes(store)

  def describe_execution(execution_id: int, direction: int) -> Dict:
    execution = store.get_executions_by_id([execution_id])[0]
    linked = [e for e in store.get_events_by_execution_ids([execution_id])
              if e.type == direction]
    arts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in linked])}
    return {"execution_id": execution_id, "component": nodes.get(execution_id),
            "state": metadata_store_pb2.Execution.State.Name(execution.last_known_state),
            "started": _iso(execution.create_time_since_epoch),
            "artifacts": [{"key": e.path.steps[0].key if e.path.steps else "",
                           "id": e.artifact_id, "type": types[arts[e.artifact_id].type_id],
                           "uri": arts[e.artifact_id].uri} for e in linked]}

  producers = [describe_execution(e.execution_id, metadata_store_pb2.Event.INPUT)
               for e in events if e.type == metadata_store_pb2.Event.OUTPUT]
  consumers = [describe_execution(e.execution_id, metadata_store_pb2.Event.OUTPUT)
               for e in events if e.type == metadata_store_pb2.Event.INPUT]
  return {"artifact": {"id": artifact.id, "type": types[artifact.type_id], "uri": artifact.uri,
                       "properties": run_summary.artifact_properties(artifact)},
          "produced_by": producers, "consumed_by": consumers}


RETRIEVAL_METRICS = ("hr_at_10", "ndcg_at_10", "hr_at_100", "top_10", "top_100")
# The TwoStageEvaluator's: the same eval rows' candidate lists as retrieved and as ordered
# by ranking score (components/two_stage_evaluator/evaluate.py).
TWO_STAGE_METRICS = ("retrieval_order_hr_at_10", "retrieval_order_ndcg_at_10",
                     "two_stage_hr_at_10", "two_stage_ndcg_at_10",
                     "two_stage_ndcg_at_10_ratio", "two_stage_ndcg_at_10_ratio_low",
                     "two_stage_ndcg_at_10_ratio_high")


def _output_props(run, node, key) -> Optional[Dict]:
  try:
    return run_summary.artifact_properties(run.output(node, key))
  except KeyError:
    return None


def _blessing(run, node) -> Dict:
  props = _output_props(run, node, "blessing") or {}
  return {"blessed": bool(props.get("blessed")), "reasons": props.get("reasons")}


TRAINERS = {"retrieval": "RetrievalTrainer", "ranking": "RankingTrainer"}


def _training(run, node) -> Optional[Dict]:
  """What a Trainer wrote beside its SavedModels (training.json): ratings, epochs,
  seconds, ratings per second (counting every epoch and ensemble member)."""
  import json  # pylint: disable=g-import-not-at-top
  from tfx.utils import path_utils  # pylint: disable=g-import-not-at-top
  try:
    with open(os.path.join(path_utils.serving_model_dir(run.output(node, "model").uri),
                           "training.json")) as f:
      summary = json.load(f)
  except (KeyError, OSError, ValueError):
    return None
  out = {k: summary.get(k) for k in ("train_examples", "epochs", "train_seconds",
                                     "examples_per_second", "feeding")}
  scorer = summary.get("sequence_scorer")
  if scorer:  # the RankingTrainer's second model (modules/sequence_trainer.py)
    out["sequence_scorer"] = {k: scorer.get(k) for k in ("best_epoch", "epochs_run",
                                                         "train_seconds", "skipped")}
  return out


def run_metrics(run: run_summary.PipelineRun) -> Dict:
  """One run's retrieval, index, ranking and two-stage metrics with blessing decisions
  (and their reasons), and the push; a stage the run did not reach is absent."""
  from components.retrieval_evaluator.executor import POPULARITY_PREFIX  # pylint: disable=g-import-not-at-top
  from pipeline import ranking_eval_config  # pylint: disable=g-import-not-at-top
  row = {"run_id": run.run_id}
  evaluation = _output_props(run, "RetrievalEvaluator", "evaluation")
  if evaluation:
    row["retrieval"] = {k: evaluation.get(k) for k in RETRIEVAL_METRICS}
    row["retrieval"]["popularity"] = {k: evaluation.get(POPULARITY_PREFIX + k)
                                      for k in RETRIEVAL_METRICS}
    row["retrieval"].update(_blessing(run, "RetrievalEvaluator"))
    row["retrieval"]["model_id"] = run.output("RetrievalTrainer", "model").id
  index = _output_props(run, "IndexBuilder", "index")
  if index:
    row["index"] = {k: index.get(k) for k in ("search_mode", "num_candidates", "recall_at_10",
                                              "queries_per_second", "build_seconds")}
    row["index"].update(_blessing(run, "IndexBuilder"))
  try:
    ranking = ranking_eval_config.load_metrics(
        run.output("RankingEvaluator", "evaluation").uri)[""]
    row["ranking"] = {"rmse": ranking.get(ranking_eval_config.RMSE),
                      "mae": ranking.get(ranking_eval_config.MAE),
                      "example_count": ranking.get("example_count"),
                      **_blessing(run, "RankingEvaluator"),
                      "model_id": run.output("RankingTrainer", "model").id}
  except (KeyError, OSError):
    pass
  two_stage = _output_props(run, "TwoStageEvaluator", "evaluation")
  if two_stage is not None:
    row["two_stage"] = {k: two_stage.get(k) for k in TWO_STAGE_METRICS}
    row["two_stage"].update(_blessing(run, "TwoStageEvaluator"))
  training = {stage: _training(run, node) for stage, node in TRAINERS.items()}
  if any(training.values()):
    row["training"] = {stage: t for stage, t in training.items() if t}
  pushed = _output_props(run, "BundlePusher", "pushed_model")
  if pushed is not None:
    row["pushed"] = {"pushed": bool(pushed.get(contract.PUSHED)),
                     "destination": pushed.get(contract.PUSHED_DESTINATION),
                     "version": pushed.get(contract.PUSHED_VERSION),
                     "reason": pushed.get(contract.NOT_PUSHED_REASON)}
  return row


def metrics(store, pipeline_name: str) -> List[Dict]:
  """Per run (oldest first): run_metrics."""
  return [run_metrics(run) for run in _pipeline_runs(store, pipeline_name)]
