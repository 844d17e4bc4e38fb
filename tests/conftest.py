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
def pipeline_config(synthetic_dir):
  """make(output_dir, **overrides): the tests' pipeline (FAST_PIPELINE) on the synthetic
  data, as pushed_run, mysql_run and the compiled run configure it."""
  from pipeline.config import PipelineConfig  # pylint: disable=g-import-not-at-top

  def make(output_dir, **overrides):
    return PipelineConfig(data_dir=synthetic_dir, output_dir=str(output_dir),
                          **FAST_PIPELINE, **overrides)
  return make


@pytest.fixture(scope="session")
def pushed_run(tmp_path_factory, pipeline_config):
  """One real LocalDagRunner run on the synthetic data, blessed and pushed:
  (config, run summary from MLMD, console output)."""
  import io  # pylint: disable=g-import-not-at-top
  from pipeline import local_runner  # pylint: disable=g-import-not-at-top
  config = pipeline_config(tmp_path_factory.mktemp("pipeline-out"))
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
def mysql_run(pipeline_config, mysql_server, tmp_path_factory):
  """The pushed run's configuration, its metadata in MySQL: (config, run summary from
  MLMD). Independent of pushed_run, so the two can run on different test workers."""
  import io  # pylint: disable=g-import-not-at-top
  from pipeline import local_runner  # pylint: disable=g-import-not-at-top
  config = pipeline_config(
      tmp_path_factory.mktemp("pipeline-out-mysql"),
      metadata_connection_file=mysql_server.connection_config_file("movrec_e2e"))
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


# Fixtures that run a whole pipeline.
PIPELINE_RUN_FIXTURES = {"pushed_run", "mysql_run"}
# The files whose tests read pushed_run. `make test` (--dist loadfile) hands them to one
# worker as one group (PushedRunGroupScheduling), so that run is built once, not on each
# worker, and they run in collection order (test_pipeline_e2e's later runs go into its
# store, as they always did). Checked at collection: a test elsewhere that reads pushed_run
# is an error naming the file to add here.
PUSHED_RUN_FILES = frozenset({"test_faults.py", "test_inspect.py", "test_pipeline_e2e.py",
                              "test_serving.py", "test_two_stage.py"})
PUSHED_RUN_GROUP = "pushed_run"


def work_group(nodeid: str) -> str:
  """A test's group for `make test`'s workers: PUSHED_RUN_GROUP, or its file."""
  path = nodeid.split("::", 1)[0]
  return PUSHED_RUN_GROUP if os.path.basename(path) in PUSHED_RUN_FILES else path


def pytest_xdist_make_scheduler(config, log):
  """--dist loadfile, with the pushed-run files as one group (see PUSHED_RUN_FILES)."""
  if config.getvalue("dist") != "loadfile":
    return None  # xdist's own scheduler
  from xdist.scheduler import LoadScopeScheduling  # pylint: disable=g-import-not-at-top

  class PushedRunGroupScheduling(LoadScopeScheduling):
    def _split_scope(self, nodeid: str) -> str:
      return work_group(nodeid)

  return PushedRunGroupScheduling(config, log)


def pytest_collection_modifyitems(items):
  """The pushed-run group first, then the other files with whole pipeline runs (an `e2e`
  mark, or mysql_run), then the rest, each group's tests in their order. `make test` hands
  whole groups to two workers in this order (--no-loadscope-reorder), each taking the next
  group when it is nearly done: started last, a group of several minutes would leave the
  other worker idle at the end; started first, the short files fill in the gaps."""
  group = {item.nodeid: work_group(item.nodeid) for item in items}
  misplaced = sorted({item.path.name for item in items if "pushed_run" in item.fixturenames
                      and group[item.nodeid] != PUSHED_RUN_GROUP})
  if misplaced:
    raise pytest.UsageError(f"{', '.join(misplaced)} read pushed_run: add them to "
                            "PUSHED_RUN_FILES in tests/conftest.py (one worker builds that run)")
  heavy = {group[item.nodeid] for item in items if item.get_closest_marker("e2e")
           or PIPELINE_RUN_FIXTURES & set(item.fixturenames)}
  items.sort(key=lambda item: (group[item.nodeid] != PUSHED_RUN_GROUP,
                               group[item.nodeid] not in heavy))  # stable


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
