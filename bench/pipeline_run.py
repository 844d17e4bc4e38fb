"""The benchmarks' shared pipeline run (cached after the first) and artifact helpers."""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from movrec import run_cmd
from pipeline import config as config_lib

DEFAULT_OUTPUT_DIR = os.path.join("outputs", "bench")
# Where the benchmark run pushes its bundles (config_lib.PipelineConfig.serving_dir).
DEFAULT_SERVING_DIR = os.path.join(DEFAULT_OUTPUT_DIR, "serving",
                                   config_lib.DEFAULT_PIPELINE_NAME)


def run(data_dir=None, output_dir=DEFAULT_OUTPUT_DIR, retrieval=None, ranking=None,
        **config_values):
  """(config, run summary): the pipeline with default settings (but `config_values`,
  PipelineConfig fields) on data_dir."""
  from pipeline import local_runner  # pylint: disable=g-import-not-at-top
  config = config_lib.PipelineConfig(
      data_dir=run_cmd.resolve_data_dir(data_dir,
                                        span_pattern=config_values.get("span_pattern")),
      output_dir=output_dir,
      retrieval_hparams=retrieval or {}, ranking_hparams=ranking or {}, **config_values)
  started = time.monotonic()
  result = local_runner.run(config, out=sys.stderr).run
  print(f"pipeline run {result.run_id}: {time.monotonic() - started:.0f} s "
        f"({result.count('COMPLETE')} executed, {result.count('CACHED')} cached)\n")
  return config, result


def exit_skipping_finalization(code: int) -> None:
  """Exits with `code` without the interpreter's finalization, which crashed the studies
  (SIGSEGV, exit 139) after every figure was printed. gdb: while modules were cleared, an
  ImportError kept in a module's namespace (google-cloud-aiplatform and -bigquery keep
  such errors) was freed, and with it a protobuf object, in protobuf 3.20's C++
  extension (_message.so). Nothing is left to write but the output buffers."""
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


def tfx_artifact(run, node: str, key: str, artifact_class=None):
  """The run's output as a tfx Artifact (its MLMD record: id, uri, split names), for the
  project's readers and executors; artifact_class: default standard_artifacts.Examples."""
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  artifact = (artifact_class or standard_artifacts.Examples)()
  artifact.set_mlmd_artifact(run.output(node, key))
  return artifact


def _transform_output(run):
  """(train files, eval files, TFTransformOutput) of the run's Transform."""
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  transformed = run.output("Transform", "transformed_examples").uri
  tft_output = tft.TFTransformOutput(run.output("Transform", "transform_graph").uri)
  files = lambda split: os.path.join(transformed, f"Split-{split}", "*")
  return files("train"), files("eval"), tft_output


def train_ranking(run, overrides: dict) -> dict:
  """Trains a ranking model with `overrides` (RankingHParams) on the run's Transform
  output, as its Trainer does (not exported); returns the training summary."""
  from modules import ranking_trainer  # pylint: disable=g-import-not-at-top
  from modules.hparams import RankingHParams  # pylint: disable=g-import-not-at-top
  _, summary = ranking_trainer.train(*_transform_output(run),
                                     RankingHParams.from_dict(overrides))
  return summary


def train_sequence_scorer(run, overrides: dict) -> dict:
  """Trains the sequence scorer with `overrides` (RankingHParams) on the run's Transform
  output, as the ranking Trainer does (not exported); returns its training summary."""
  from modules import ranking_trainer  # pylint: disable=g-import-not-at-top
  from modules.hparams import RankingHParams  # pylint: disable=g-import-not-at-top
  train_files, _, tft_output = _transform_output(run)
  _, summary = ranking_trainer.train_sequence_scorer(train_files, tft_output,
                                                     RankingHParams.from_dict(overrides))
  return summary


def train_retrieval(run, overrides: dict, serving_dir: str = None, keep=None) -> dict:
  """Trains a retrieval model with `overrides` (RetrievalHParams) on the run's Transform
  output, as its Trainer does (but only on the ratings `keep` accepts, see
  retrieval_trainer.train), and exports it into serving_dir (None: not exported);
  returns the training summary."""
  from modules import retrieval_trainer  # pylint: disable=g-import-not-at-top
  from modules.hparams import RetrievalHParams  # pylint: disable=g-import-not-at-top
  train_files, eval_files, tft_output = _transform_output(run)
  model, summary = retrieval_trainer.train(train_files, eval_files, tft_output,
                                           RetrievalHParams.from_dict(overrides),
                                           keep=keep)
  if serving_dir:
    retrieval_trainer.export(model, tft_output, serving_dir, summary)
  return summary
