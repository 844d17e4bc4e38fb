"""Runs the pipeline locally: LocalDagRunner, Beam DirectRunner, SQLite MLMD, caching on."""

import dataclasses
import datetime
import os
import sys
from typing import TextIO

import ml_metadata as mlmd
from absl import logging
from tfx.dsl.compiler import constants
from tfx.orchestration import metadata
from tfx.orchestration.local import runner_utils
from tfx.orchestration.local.local_dag_runner import LocalDagRunner
from tfx.orchestration.portable import launcher
from tfx.orchestration.portable import runtime_parameter_utils

from pipeline import abandoned
from pipeline import component_process
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


class ChildProcessDagRunner(LocalDagRunner):
  """The LocalDagRunner with each executor in a child process (pipeline/component_process.py).

  TFX's LocalDagRunner builds each node's Launcher with the default (in-process) executor
  operators and takes no others; this is its node loop (TFX 1.16) with ours passed in.
  Partial runs (run_options) are not supported: nothing here uses them."""

  OPERATORS = {spec: component_process.ChildProcessExecutorOperator
               for spec in component_process.ChildProcessExecutorOperator.SUPPORTED_EXECUTOR_SPEC_TYPE}

  def run_with_ir(self, pipeline, run_options=None) -> None:
    if run_options is not None:
      raise NotImplementedError("partial runs go through tfx's LocalDagRunner")
    runtime_parameter_utils.substitute_runtime_parameter(
        pipeline, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: datetime.datetime.now().isoformat()})
    deployment_config = runner_utils.extract_local_deployment_config(pipeline)
    connection = getattr(deployment_config.metadata_connection_config,
                         deployment_config.metadata_connection_config.WhichOneof(
                             "connection_config"))
    for node in pipeline.nodes:  # in topological order
      pipeline_node = node.pipeline_node
      node_id = pipeline_node.node_info.id
      if pipeline_node.execution_options.HasField("skip"):
        continue
      component_launcher = launcher.Launcher(
          pipeline_node=pipeline_node,
          mlmd_connection=metadata.Metadata(connection),
          pipeline_info=pipeline.pipeline_info,
          pipeline_runtime_spec=pipeline.runtime_spec,
          executor_spec=runner_utils.extract_executor_spec(deployment_config, node_id),
          custom_driver_spec=runner_utils.extract_custom_driver_spec(deployment_config, node_id),
          custom_executor_operators=self.OPERATORS)
      # The same records as TFX's runner: pipeline/progress.py turns them into lines.
      logging.info("Component %s is running.", node_id)
      component_launcher.launch()
      logging.info("Component %s is finished.", node_id)


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
        runner = (ChildProcessDagRunner() if config.executors_in_child_processes()
                  else LocalDagRunner())
        with component_process.arguments_hidden_from_executors():
          runner.run(pipeline)
      except Exception as e:  # pylint: disable=broad-except
        raise PipelineRunError(reporter.current, e, log_path) from e
    recorded = run_summary.latest_run(metadata_store(config), config.pipeline_name)
  return LocalRunResult(recorded, log_path)
