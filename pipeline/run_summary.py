"""What a pipeline run did, read back from ML Metadata.

TFX records each run as a `pipeline_run` context; every component execution (executed or
served from cache) is attributed to it and to its `node` context ("<pipeline>.<node id>").
"""

import dataclasses
from typing import Dict, List, Optional

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

_STATE_NAMES = {value: name for name, value in
                metadata_store_pb2.Execution.State.items()}


@dataclasses.dataclass
class ComponentRun:
  node_id: str
  state: str  # COMPLETE (executed), CACHED, FAILED, RUNNING, ...
  seconds: float
  outputs: Dict[str, List[metadata_store_pb2.Artifact]]
  started_ms: int = 0  # when the execution was created (unix milliseconds)


@dataclasses.dataclass
class PipelineRun:
  run_id: str
  started_ms: int
  components: List[ComponentRun]

  def component(self, node_id: str) -> ComponentRun:
    for c in self.components:
      if c.node_id == node_id:
        return c
    raise KeyError(f"No component {node_id!r} in run {self.run_id}.")

  def count(self, state: str) -> int:
    return sum(c.state == state for c in self.components)

  def output(self, node_id: str, key: str) -> metadata_store_pb2.Artifact:
    return self.component(node_id).outputs[key][0]


def value_of(value: metadata_store_pb2.Value):
  """A typed MLMD property value as a plain Python value."""
  kind = value.WhichOneof("value")
  return getattr(value, kind) if kind else None


def artifact_properties(artifact: metadata_store_pb2.Artifact) -> Dict:
  """An artifact's properties and custom properties as plain Python values."""
  out = {k: value_of(v) for k, v in artifact.properties.items()}
  out.update({k: value_of(v) for k, v in artifact.custom_properties.items()})
  return out


def execution_nodes(store: mlmd.MetadataStore) -> Dict[int, str]:
  """execution id -> the pipeline node id that ran it, for every execution in the store."""
  nodes = {}
  for context in store.get_contexts_by_type("node"):
    for execution in store.get_executions_by_context(context.id):
      nodes[execution.id] = context.name.split(".", 1)[-1]
  return nodes


def _node_id(store: mlmd.MetadataStore, execution_id: int, pipeline_name: str) -> Optional[str]:
  for context in store.get_contexts_by_execution(execution_id):
    if context.type == "node" and context.name.startswith(pipeline_name + "."):
      return context.name[len(pipeline_name) + 1:]
  return None


def _outputs(store: mlmd.MetadataStore, execution_id: int):
  outputs: Dict[str, List[metadata_store_pb2.Artifact]] = {}
  events = [e for e in store.get_events_by_execution_ids([execution_id])
            if e.type == metadata_store_pb2.Event.OUTPUT]
  artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
  for event in events:
    key = event.path.steps[0].key if event.path.steps else ""
    outputs.setdefault(key, []).append(artifacts[event.artifact_id])
  return outputs


def pipeline_runs(store: mlmd.MetadataStore, pipeline_name: str) -> List[PipelineRun]:
  """Every run of `pipeline_name` in the store, oldest first."""
  runs = []
  for context in sorted(store.get_contexts_by_type("pipeline_run"),
                        key=lambda c: (c.create_time_since_epoch, c.id)):
    components = []
    for execution in sorted(store.get_executions_by_context(context.id), key=lambda e: e.id):
      node_id = _node_id(store, execution.id, pipeline_name)
      if node_id is None:
        continue
      seconds = (execution.last_update_time_since_epoch -
                 execution.create_time_since_epoch) / 1000.0
      components.append(ComponentRun(node_id, _STATE_NAMES[execution.last_known_state],
                                     seconds, _outputs(store, execution.id),
                                     execution.create_time_since_epoch))
    if components:
      runs.append(PipelineRun(context.name, context.create_time_since_epoch, components))
  return runs


def latest_run(store: mlmd.MetadataStore, pipeline_name: str) -> PipelineRun:
  runs = pipeline_runs(store, pipeline_name)
  if not runs:
    raise LookupError(f"The metadata store has no run of pipeline {pipeline_name!r}.")
  return runs[-1]
