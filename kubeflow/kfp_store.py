"""ML Metadata records of a compiled-spec run, kept the way the KFP v2 launcher keeps them,
and the resolver queries answered from them.

Contexts `system.Pipeline` / `system.PipelineRun`, one `system.ContainerExecution` per
task, artifacts typed by their schema title (`tfx.Model`, `movrec.RetrievalIndex`) with
the executor's output metadata as custom properties. Resolver filters are evaluated over
the whole store, as Vertex AI evaluates them over its metadata store.
"""

import re
from typing import Dict, List, Optional

import ml_metadata as mlmd
from google.protobuf import json_format
from google.protobuf import struct_pb2
from ml_metadata.proto import metadata_store_pb2 as pb

from kubeflow.compiled_spec import CompiledSpecError, schema_title

PIPELINE_CONTEXT = "system.Pipeline"
RUN_CONTEXT = "system.PipelineRun"
EXECUTION_TYPE = "system.ContainerExecution"
TASK_NAME = "task_name"  # custom property of each execution
DEFAULT_QUERY_LIMIT = 1  # pipeline spec: an ArtifactQuerySpec without a limit returns one

_CLAUSES = (  # the clauses TFX's KubeflowV2DagRunner writes into resolver filters
    ("schema_title", re.compile(r'^schema_title="([^"]+)"$')),
    ("state", re.compile(r"^state=(\w+)$")),
    ("metadata", re.compile(r"^metadata\.(\w+)\.(number_value|string_value)=(.+)$")),
    ("name", re.compile(r'^name="([^"]*)"$')),
)


def _to_value(value) -> pb.Value:
  if isinstance(value, bool) or not isinstance(value, (int, float, str)):
    struct = struct_pb2.Struct()
    struct.update({"__value__": value})
    return pb.Value(struct_value=struct)
  if isinstance(value, str):
    return pb.Value(string_value=value)
  return pb.Value(double_value=float(value))


def _from_value(value: pb.Value):
  kind = value.WhichOneof("value")
  if kind == "struct_value":
    return json_format.MessageToDict(value.struct_value).get("__value__")
  return getattr(value, kind) if kind else None


class KfpStore:
  """One pipeline run's records in an MLMD store."""

  def __init__(self, store: mlmd.MetadataStore, pipeline_name: str, run_id: str):
    self.store = store
    self.pipeline = self._context(PIPELINE_CONTEXT, pipeline_name, reuse=True)
    self.run = self._context(RUN_CONTEXT, run_id, reuse=False)

  def _context(self, type_name: str, name: str, reuse: bool) -> int:
    type_id = self.store.put_context_type(pb.ContextType(name=type_name))
    existing = self.store.get_context_by_type_and_name(type_name, name)
    if existing is not None:
      if reuse:
        return existing.id
      raise CompiledSpecError(f"the metadata store already has a {type_name} named {name!r}")
    return self.store.put_contexts([pb.Context(type_id=type_id, name=name)])[0]

  def record(self, task_name: str, inputs: Dict[str, List[Dict]],
             outputs: Dict[str, List[Dict]], state: str) -> int:
    """Records a finished task: its execution, its input and output artifacts (runtime
    artifact dicts with "type", "name", "uri", "metadata") and the events between them."""
    type_id = self.store.put_execution_type(pb.ExecutionType(name=EXECUTION_TYPE))
    execution = pb.Execution(type_id=type_id, last_known_state=getattr(pb.Execution, state))
    execution.custom_properties[TASK_NAME].string_value = task_name
    pairs = []
    for event_type, artifacts in ((pb.Event.INPUT, inputs), (pb.Event.OUTPUT, outputs)):
      for key, listed in artifacts.items():
        for index, runtime in enumerate(listed):
          event = pb.Event(type=event_type)
          event.path.steps.add().key = key
          event.path.steps.add().index = index
          pairs.append((self._artifact(runtime, write=event_type == pb.Event.OUTPUT), event))
    contexts = self.store.get_contexts_by_id([self.pipeline, self.run])
    execution_id, _, _ = self.store.put_execution(execution, pairs, contexts)
    return execution_id

  def _artifact(self, runtime: Dict, write: bool) -> pb.Artifact:
    title = schema_title(runtime["type"])
    found = self.store.get_artifact_by_type_and_name(title, runtime["name"])
    if found is not None and not write:
      return found
    artifact = found or pb.Artifact(
        type_id=self.store.put_artifact_type(pb.ArtifactType(name=title)),
        name=runtime["name"])
    artifact.uri = runtime["uri"]
    artifact.state = pb.Artifact.LIVE
    for key, value in runtime.get("metadata", {}).items():
      artifact.custom_properties[key].CopyFrom(_to_value(value))
    return artifact

  def query(self, filter_text: str, limit: Optional[int] = None) -> List[Dict]:
    """The newest artifacts matching a resolver filter, as runtime artifact dicts."""
    title, checks = None, []
    for clause in filter_text.split(" AND "):
      for kind, pattern in _CLAUSES:
        match = pattern.match(clause.strip())
        if match:
          break
      else:
        raise CompiledSpecError(f"resolver filter clause {clause!r} (in {filter_text!r}) is "
                                "not one this launcher understands")
      if kind == "schema_title":
        title = match.group(1)
      else:
        checks.append((kind, match.groups()))
    if title is None:
      raise CompiledSpecError(f"resolver filter without schema_title: {filter_text!r}")
    try:
      candidates = self.store.get_artifacts_by_type(title)
    except mlmd.errors.NotFoundError:
      candidates = []
    found = [a for a in candidates if all(_matches(a, kind, args) for kind, args in checks)]
    found.sort(key=lambda a: (a.create_time_since_epoch, a.id), reverse=True)
    return [{"name": a.name, "uri": a.uri, "type": {"schemaTitle": title},
             "metadata": {k: _from_value(v) for k, v in a.custom_properties.items()}}
            for a in found[:limit or DEFAULT_QUERY_LIMIT]]


def _matches(artifact: pb.Artifact, kind: str, args) -> bool:
  if kind == "state":
    return pb.Artifact.State.Name(artifact.state) == args[0]
  if kind == "name":
    return artifact.name == args[0]
  key, field, expected = args
  if key not in artifact.custom_properties:
    return False
  value = _from_value(artifact.custom_properties[key])
  if field == "number_value":
    return isinstance(value, (int, float)) and float(value) == float(expected)
  return value == expected.strip('"')
