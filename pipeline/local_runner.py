"""Runs the pipeline locally: LocalDagRunner, Beam DirectRunner, SQLite MLMD, caching on."""

import contextlib
import dataclasses
import datetime
import fcntl
import os
import sys
from typing import Iterator, TextIO

import ml_metadata as mlmd
from tfx.orchestration import metadata
from tfx.orchestration.local.local_dag_runner import LocalDagRunner

from pipeline import abandoned
from pipeline.errors import PipelineRunError, StoreInUseError
from pipeline import progress
from pipeline import run_summary
from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline


@dataclasses.dataclass
class LocalRunResult:
  run: run_summary.PipelineRun  # as recorded in MLMD
  log_path: str  # full TFX / Beam / TensorFlow log of the run


@contextlib.contextmanager
def exclusive_store(metadata_path: str) -> Iterator[None]:
  """One run at a time per SQLite MLMD file (concurrent writers corrupt runs)."""
  os.makedirs(os.path.dirname(metadata_path), exist_ok=True)
  lock_path = metadata_path + ".lock"
  with open(lock_path, "w") as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise StoreInUseError(
          f"Another run is using the metadata store {metadata_path} (lock {lock_path}). "
          "Wait for it to finish, or use another --output-dir.") from None
    yield


def connection_config(config: PipelineConfig):
  """The local SQLite MLMD store of `config`."""
  return metadata.sqlite_metadata_connection_config(config.metadata_path)


def metadata_store(config: PipelineConfig) -> mlmd.MetadataStore:
  return mlmd.MetadataStore(connection_config(config))


def run(config: PipelineConfig, out: TextIO = sys.stdout) -> LocalRunResult:
  """Runs the pipeline with readable progress on `out`; returns the run as MLMD has it."""
  pipeline = create_pipeline(config, connection_config(config))
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  log_path = os.path.join(config.log_dir, f"run-{stamp}.log")
  with exclusive_store(config.metadata_path):
    # Nothing else can be running now: executions still open were killed.
    for line in abandoned.mark_abandoned(metadata_store(config), config.pipeline_name,
                                         config.pipeline_root):
      print(f"note: {line} was left running by a killed run; recorded as abandoned and its "
            "partial outputs removed", file=out)
    with progress.tfx_logs_to_file(log_path, len(pipeline.components), out) as reporter:
      try:
        LocalDagRunner().run(pipeline)
      except Exception as e:  # pylint: disable=broad-except
        raise PipelineRunError(reporter.current, e, log_path) from e
    recorded = run_summary.latest_run(metadata_store(config), config.pipeline_name)
  # The runner's "Component Transform is finished" record does not reach the reporter
  # on a fresh run (cause not found); MLMD is authoritative, so report what was missed.
  for component in recorded.components:
    if component.node_id not in reporter.states:
      reporter.report(component.node_id, component.state.lower().replace("complete", "done"),
                      component.seconds)
  return LocalRunResult(recorded, log_path)
