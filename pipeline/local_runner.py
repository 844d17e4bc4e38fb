"""Runs the pipeline locally: LocalDagRunner, Beam DirectRunner, SQLite MLMD, caching on."""

import dataclasses
import datetime
import os
import sys
from typing import TextIO

import ml_metadata as mlmd
from tfx.orchestration.local.local_dag_runner import LocalDagRunner

from pipeline import abandoned
from pipeline import metadata_store as store_lib
from pipeline.errors import PipelineRunError
from pipeline import progress
from pipeline import run_summary
from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline


@dataclasses.dataclass
class LocalRunResult:
  run: run_summary.PipelineRun  # as recorded in MLMD
  log_path: str  # full TFX / Beam / TensorFlow log of the run


def connection_config(config: PipelineConfig):
  """The MLMD store of `config`: its connection config file (a shared MySQL store), or the
  SQLite file under its output directory."""
  if config.metadata_connection_file:
    return store_lib.load_connection_config(config.metadata_connection_file)
  return store_lib.sqlite_config(config.metadata_path)


def metadata_store(config: PipelineConfig) -> mlmd.MetadataStore:
  return store_lib.open_store(connection_config(config))


def run(config: PipelineConfig, out: TextIO = sys.stdout) -> LocalRunResult:
  """Runs the pipeline with readable progress on `out`; returns the run as MLMD has it."""
  pipeline = create_pipeline(config, connection_config(config))
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  log_path = os.path.join(config.log_dir, f"run-{stamp}.log")
  with store_lib.exclusive(connection_config(config)):
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
  return LocalRunResult(recorded, log_path)
