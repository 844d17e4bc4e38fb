"""Runs that were killed: their executions recorded as such, their partial outputs removed.

A process killed mid-component (SIGKILL, OOM killer, a lost machine) leaves its MLMD
execution RUNNING for good and a half-written output folder. The next run, once it holds
the store's lock (so nothing else can be running), calls `mark_abandoned`: such
executions become CANCELED with an `abandoned` reason (so `movrec runs` shows their run
as FAILED), their unpublished output artifacts ABANDONED, and their output folders are
deleted. TFX's cache only reuses published outputs of COMPLETE executions, so nothing
partial is ever reused; deleting the folders keeps the pipeline root honest too.
"""

import glob
import os
import shutil
import time
from typing import List

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

from pipeline import run_summary

_LEFT_OPEN = (metadata_store_pb2.Execution.NEW, metadata_store_pb2.Execution.RUNNING)
_OUTPUT_EVENTS = tuple(getattr(metadata_store_pb2.Event, name)
                       for name in ("OUTPUT", "PENDING_OUTPUT")
                       if hasattr(metadata_store_pb2.Event, name))
REASON_KEY = "abandoned"


def mark_abandoned(store: mlmd.MetadataStore, pipeline_name: str,
                   pipeline_root: str) -> List[str]:
  """Marks the pipeline's executions left NEW or RUNNING as abandoned; returns one line
  per execution ("<node> (execution <id>)")."""
  context = store.get_context_by_type_and_name("pipeline", pipeline_name)
  if context is None:
    return []
  nodes = run_summary.execution_nodes(store)
  found = []
  stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
  for execution in store.get_executions_by_context(context.id):
    if execution.last_known_state not in _LEFT_OPEN:
      continue
    node = nodes.get(execution.id, execution.type)
    left = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
    execution.last_known_state = metadata_store_pb2.Execution.CANCELED
    execution.custom_properties[REASON_KEY].string_value = (
        f"left {left} by a run that was killed; recorded at {stamp} UTC by the next run")
    store.put_executions([execution])
    _abandon_outputs(store, execution.id)
    for folder in glob.glob(os.path.join(pipeline_root, node, "*", str(execution.id))):
      shutil.rmtree(folder, ignore_errors=True)
    found.append(f"{node} (execution {execution.id})")
  return found


def _abandon_outputs(store: mlmd.MetadataStore, execution_id: int) -> None:
  events = [e for e in store.get_events_by_execution_ids([execution_id])
            if e.type in _OUTPUT_EVENTS]
  artifacts = store.get_artifacts_by_id([e.artifact_id for e in events])
  unpublished = [a for a in artifacts if a.state != metadata_store_pb2.Artifact.LIVE]
  for artifact in unpublished:
    artifact.state = metadata_store_pb2.Artifact.ABANDONED
    if artifact.uri and os.path.isdir(artifact.uri):
      shutil.rmtree(artifact.uri, ignore_errors=True)
  if unpublished:
    store.put_artifacts(unpublished)
