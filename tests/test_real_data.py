"""The real MovieLens 100k through the whole pipeline (MOVIELENS_DATA_DIR; CI sets it to
../shared/data/ml-100k). Its own file so that a test worker can run it beside the
synthetic end-to-end runs (`make test` distributes files over two workers)."""
import io
import os

import pytest

from pipeline import local_runner
from pipeline import ranking_eval_config
from pipeline.config import PipelineConfig
from modules import features as F
from serving.retriever import load_latest_bundle
from test_pipeline_e2e import COMPONENTS, props


@pytest.mark.e2e
@pytest.mark.real_data
def test_real_ml_100k_run(tmp_path):
  data_dir = os.environ.get("MOVIELENS_DATA_DIR")
  if not data_dir:
    pytest.skip("MOVIELENS_DATA_DIR not set (CI sets it to ../shared/data/ml-100k)")
  # Real data, default thresholds and gates; fewer epochs and one ranking network instead
  # of the default ensemble, to keep CI short.
  config = PipelineConfig(data_dir=data_dir, output_dir=str(tmp_path / "out"),
                          retrieval_hparams={"epochs": 3},
                          ranking_hparams={"ensemble_size": 1, "epochs": 4})
  run = local_runner.run(config, out=io.StringIO()).run
  assert run.count("COMPLETE") == len(COMPONENTS)
  examples = run.output("MovieLensExampleGen", "examples").custom_properties
  assert examples["num_examples_train"].int_value + examples["num_examples_eval"].int_value == 100_000
  assert examples["movielens_layout"].string_value == "ml-100k"
  # The default thresholds hold on real data, and the real catalogue is indexed and pushed.
  assert props(run.output("RetrievalEvaluator", "blessing"))["blessed"] == 1
  assert props(run.output("IndexBuilder", "index"))["num_candidates"] == 1682
  assert props(run.output("BundlePusher", "pushed_model"))["pushed"] == 1
  retriever = load_latest_bundle(config.serving_dir)
  assert len(retriever.users) == 943
  assert len(retriever.recommend("1", k=10, exclude_rated=True)) == 10
  rmse = ranking_eval_config.load_metrics(run.output("RankingEvaluator", "evaluation").uri)[""]
  assert rmse[ranking_eval_config.RMSE] < PipelineConfig.ranking_rmse_bound
  check_histories_are_causal(run, data_dir)


def check_histories_are_causal(run, data_dir):
  """On the real run's transformed rows, every history the Trainer, the evaluation
  signature and the recall queries would build (the one `with_history` they share) holds
  only ratings made strictly before the example, and all of them (up to history_max):
  counted independently from u.data."""
  import collections  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  from modules import retrieval_model, retrieval_trainer, transformed_data  # pylint: disable=g-import-not-at-top
  from modules.hparams import RetrievalHParams  # pylint: disable=g-import-not-at-top
  tft_output = tft.TFTransformOutput(run.output("Transform", "transform_graph").uri)
  spec = tft_output.transformed_feature_spec()
  files = lambda split: os.path.join(run.output("Transform", "transformed_examples").uri,
                                     f"Split-{split}", "*")
  table = retrieval_trainer.history_table(
      transformed_data.columns(files("train"), spec, retrieval_trainer.ID_COLUMNS),
      transformed_data.categorical_sizes(tft_output))
  history_max = RetrievalHParams().history_max
  # Independently: each user's rating times from the raw file; the last one is eval.
  times = collections.defaultdict(list)
  with open(os.path.join(data_dir, "u.data")) as f:
    for line in f:
      user, _, _, timestamp = line.split("\t")
      times[user].append(int(timestamp))
  times = {user: np.array(t) for user, t in times.items()}
  vocab = [u.decode() for u in tft_output.vocabulary_by_name(F.VOCABULARY_NAMES[F.USER_ID])]
  checked = 0
  for split in ("train", "eval"):
    for batch in transformed_data.dataset(files(split), spec, 8192, cache=False):
      history = retrieval_model.with_history(batch, table, history_max)[
          retrieval_model.HISTORY_SECONDS_FEATURE]
      seconds = batch[retrieval_model.QUERY_SECONDS_FEATURE].numpy().reshape(-1)
      users = batch[retrieval_model.QUERY_ID_FEATURE].numpy().reshape(-1)
      lengths = history.row_lengths().numpy()
      assert (history.flat_values.numpy() < np.repeat(seconds, lengths)).all(), split
      # Every rating before a row is a training rating (the eval one is each user's last).
      earlier = np.array([(times[vocab[u]] < s).sum() for u, s in zip(users, seconds)])
      np.testing.assert_array_equal(lengths, np.minimum(earlier, history_max), split)
      checked += len(seconds)
  assert checked == 100_000
