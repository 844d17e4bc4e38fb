"""The Beam options every Beam component gets: a real TFX Beam executor takes them as they
are, without building an sdist of TFX's install directory for each component."""
import os
import shutil

import apache_beam as beam
from apache_beam.testing import util as beam_testing
import pytest
from tfx.components.statistics_gen import executor as statistics_gen_executor
from tfx.dsl.components.base import base_beam_executor

from pipeline.config import (BEAM_IN_MEMORY, BEAM_MULTI_PROCESSING, PipelineConfig,
                             direct_runner_args)


def executor_args(beam_pipeline_args):
  """The Beam options a real TFX Beam executor (StatisticsGen's) ends up with, given these."""
  executor = statistics_gen_executor.Executor(
      base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=beam_pipeline_args))
  return executor._beam_pipeline_args  # pylint: disable=protected-access


@pytest.mark.parametrize("mode", [BEAM_IN_MEMORY, BEAM_MULTI_PROCESSING])
def test_direct_runner_args_need_no_tfx_sdist_and_run(synthetic_dir, mode):
  config = PipelineConfig(data_dir=synthetic_dir, beam_mode=mode, beam_workers=2)
  args = executor_args(config.beam_pipeline_args())
  assert not any(a.startswith("--extra_package") for a in args)
  assert f"--setup_file={config.beam_setup_file}" in args
  assert os.path.exists(config.beam_setup_file)  # the project's own setup.py
  # The DirectRunner reads no staging option: a pipeline with these options runs.
  with beam.Pipeline(argv=args) as p:
    counted = p | beam.Create(range(5)) | beam.combiners.Count.Globally()
    beam_testing.assert_that(counted, beam_testing.equal_to([5]))


def test_without_a_dependency_flag_tfx_builds_an_sdist_per_executor():
  """Why the flag is there: TFX 1.16 copies its install directory and builds an sdist."""
  (package,) = [a.split("=", 1)[1] for a in executor_args(direct_runner_args(setup_file=None))
                if a.startswith("--extra_package")]
  try:
    assert os.path.basename(package).startswith("tfx_ephemeral")
  finally:  # <tempdir>/build/tfx/dist/tfx_ephemeral-*.tar.gz: TFX never removes it
    shutil.rmtree(package.split(os.sep + "build" + os.sep)[0], ignore_errors=True)


def test_a_dependency_flag_of_the_users_own_is_kept_alone(synthetic_dir):
  config = PipelineConfig(data_dir=synthetic_dir,
                          extra_beam_args=("--requirements_file=/x/requirements.txt",))
  args = config.beam_pipeline_args()
  assert not any(a.startswith("--setup_file") for a in args)
  assert executor_args(args)[:len(args)] == args
