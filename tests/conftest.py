"""Test session setup: Keras 2 before TensorFlow loads; shared synthetic data."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # pylint: disable=g-import-not-at-top

from components.movielens_example_gen import synthetic  # pylint: disable=g-import-not-at-top


@pytest.fixture(scope="session")
def synthetic_data():
  return synthetic.generate(n_users=120, n_movies=80, seed=7)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory, synthetic_data):
  return synthetic.write(synthetic_data, str(tmp_path_factory.mktemp("ml-synthetic")))


# Small, quick models for pipeline runs on the synthetic data. Synthetic ratings carry
# noise of about one star, so the ranking bound is looser than the real-data default.
# Batches of 128: the synthetic training split (~4k ratings) would be 4 steps an epoch at
# the default 1,024, too few to beat popularity's next-item HR@10 (0.33 here) reliably.
# The sequence scorer's first epoch is mostly tracing (~15 s); later ones ~1.5 s here.
FAST_PIPELINE = dict(retrieval_hparams={"epochs": 4, "batch_size": 128},
                     ranking_hparams={"epochs": 4, "ensemble_size": 1,
                                      "sequence_max_epochs": 3},
                     ranking_rmse_bound=1.5)


@pytest.fixture(scope="session")
def fast_pipeline():
  return dict(FAST_PIPELINE)


@pytest.fixture(scope="session")
def fast_pipeline_without_scorer():
  """For runs that test something else (spans, faults): no sequence scorer to train, so
  the TwoStageEvaluator only records that there is none."""
  return dict(FAST_PIPELINE, ranking_hparams={**FAST_PIPELINE["ranking_hparams"],
                                              "sequence_scorer": False})


@pytest.fixture(scope="session")
def pushed_run(tmp_path_factory, synthetic_dir):
  """One real LocalDagRunner run on the synthetic data, blessed and pushed:
  (config, run summary from MLMD, console output)."""
  import io  # pylint: disable=g-import-not-at-top
  from pipeline import local_runner  # pylint: disable=g-import-not-at-top
  from pipeline.config import PipelineConfig  # pylint: disable=g-import-not-at-top
  config = PipelineConfig(data_dir=synthetic_dir,
                          output_dir=str(tmp_path_factory.mktemp("pipeline-out")),
                          **FAST_PIPELINE)
  out = io.StringIO()
  run = local_runner.run(config, out=out).run
  return config, run, out.getvalue()


@pytest.fixture(scope="session")
def mysql_server(tmp_path_factory):
  """A real MariaDB/MySQL server for this session (tests/mysql_server.py)."""
  from mysql_server import MySQLServer  # pylint: disable=g-import-not-at-top
  server = MySQLServer(tmp_path_factory.mktemp("mysql"))
  yield server
  server.stop()


@pytest.fixture(scope="session")
def mysql_run(synthetic_dir, mysql_server, tmp_path_factory):
  """The pushed run's configuration, its metadata in MySQL: (config, run summary from
  MLMD). Independent of pushed_run, so the two can run on different test workers."""
  import io  # pylint: disable=g-import-not-at-top
  from pipeline import local_runner  # pylint: disable=g-import-not-at-top
  from pipeline.config import PipelineConfig  # pylint: disable=g-import-not-at-top
  config = PipelineConfig(
      data_dir=synthetic_dir, output_dir=str(tmp_path_factory.mktemp("pipeline-out-mysql")),
      metadata_connection_file=mysql_server.connection_config_file("movrec_e2e"),
      **FAST_PIPELINE)
  return config, local_runner.run(config, out=io.StringIO()).run



@pytest.fixture(scope="session")
def pushed_artifacts(pushed_run):
  """The pushed run's blessed retrieval model, index, ranking model and training examples
  as TFX artifacts (what the BundlePusher is given)."""
  from components import artifact_types  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  _, run, _ = pushed_run

  def artifact(node, key, artifact_class):
    value = artifact_class()
    value.set_mlmd_artifact(run.output(node, key))
    return value

  return dict(
      model=artifact("RetrievalTrainer", "model", standard_artifacts.Model),
      index=artifact("IndexBuilder", "index", artifact_types.RetrievalIndex),
      ranking=artifact("RankingTrainer", "model", standard_artifacts.Model),
      examples=[artifact("MovieLensExampleGen", "examples", standard_artifacts.Examples)],
      candidates=artifact("MovieLensExampleGen", "candidates", standard_artifacts.Examples),
      transform_graph=artifact("Transform", "transform_graph",
                               standard_artifacts.TransformGraph),
      model_blessing=artifact("RetrievalEvaluator", "blessing", standard_artifacts.ModelBlessing),
      ranking_blessing=artifact("RankingEvaluator", "blessing",
                                standard_artifacts.ModelBlessing),
      order_blessing=artifact("TwoStageEvaluator", "blessing", standard_artifacts.ModelBlessing))


# Fixtures that run a whole pipeline, shared by a test worker's files.
PIPELINE_RUN_FIXTURES = {"pushed_run", "mysql_run"}


def pytest_collection_modifyitems(items):
  """Files with whole pipeline runs (an `e2e` mark, or a shared run) first, each file's
  tests in their order. `make test` hands whole files to two workers in this order
  (--no-loadscope-reorder), each taking the next file when it is free: started last, a
  file of several minutes would leave the other worker idle at the end; started first,
  the short files fill in the gaps."""
  heavy = {item.path for item in items if item.get_closest_marker("e2e")
           or PIPELINE_RUN_FIXTURES & set(item.fixturenames)}
  items.sort(key=lambda item: item.path not in heavy)  # stable: the order otherwise kept


def pytest_unconfigure(config):  # pylint: disable=unused-argument
  """At exit, models still loaded (over a thousand of TensorFlow's functions after a full
  run) are freed after TensorFlow's module globals, and AtomicFunction.__del__ then fails
  ("Exception ignored ... TypeError: 'NoneType' object is not subscriptable", ~15 of
  them after the last test). Those destructors only release memory the process is
  returning, so from here on that one failure is swallowed; everything else about them,
  and any other destructor's error, is unchanged."""
  import sys  # pylint: disable=g-import-not-at-top
  if "tensorflow" not in sys.modules:
    return
  from tensorflow.python.eager.polymorphic_function import atomic_function  # pylint: disable=g-import-not-at-top
  cls = atomic_function.AtomicFunction

  # Names bound as defaults: this module's globals may be gone when it runs.
  def quiet_del(self, original=cls.__del__, gone=TypeError):
    try:
      original(self)
    except gone:
      pass
  cls.__del__ = quiet_del
