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
  # Real data, default thresholds and gates; fewer epochs, and one epoch of a fifth of the
  # training queries for the sequence scorer (about 60 s an epoch in full), to keep CI short.
  config = PipelineConfig(data_dir=data_dir, output_dir=str(tmp_path / "out"),
                          retrieval_hparams={"epochs": 3},
                          ranking_hparams={"ensemble_size": 1, "epochs": 4,
                                           "sequence_max_epochs": 1,
                                           "sequence_max_queries_per_epoch": 20_000})
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
  # The second stage trained on real data and was judged on the same eval rows.
  two_stage = props(run.output("TwoStageEvaluator", "evaluation"))
  assert two_stage["eval_ratings"] == 943 and two_stage["candidates"] == 100
  assert 0 < two_stage["two_stage_ndcg_at_10"] and 0 < two_stage["retrieval_order_ndcg_at_10"]
  check_histories_are_causal(run, data_dir)
  # The evaluator's popularity figures, recomputed from u.data alone.
  evaluation = props(run.output("RetrievalEvaluator", "evaluation"))
  hr, ndcg = popularity_next_item(data_dir, same_second_removed=True)
  assert evaluation["popularity_hr_at_10"] == pytest.approx(hr, rel=1e-5)
  assert evaluation["popularity_ndcg_at_10"] == pytest.approx(ndcg, rel=1e-5)
  # Leaving the same second's movies in would give other figures (the rule is checked).
  assert popularity_next_item(data_dir, same_second_removed=False)[0] != pytest.approx(hr)


def popularity_next_item(data_dir, same_second_removed, k=10):
  """Popularity's HR@k and NDCG@10 on ml-100k's split `last`, from u.data: each user's
  latest rating (ties: the larger movie id as a string, the split's order) ranked by every
  movie's training ratings before its second, the user's other movies rated by then
  removed (those in the same second only if same_second_removed), ties broken at random
  (the expectation over their orders)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  with open(os.path.join(data_dir, "u.data")) as f:
    ratings = [(user, movie, int(t)) for user, movie, _, t in (l.split("\t") for l in f)]
  latest = {}
  for user, movie, t in ratings:
    if user not in latest or (t, movie) > latest[user][::-1]:
      latest[user] = (movie, t)
  train = [(user, movie, t) for user, movie, t in ratings if latest[user] != (movie, t)]
  with open(os.path.join(data_dir, "u.item"), encoding="latin-1") as f:
    catalogue = {line.split("|")[0]: i for i, line in enumerate(f)}
  order = sorted(train, key=lambda r: r[2])
  seconds = np.array([t for _, _, t in order])
  movies = np.array([catalogue[m] for _, m, _ in order])
  by_user = {}
  for user, movie, t in train:
    by_user.setdefault(user, []).append((catalogue[movie], t))
  hits = gains = 0.0
  for user, (movie, t) in latest.items():
    counts = np.bincount(movies[:np.searchsorted(seconds, t)], minlength=len(catalogue))
    rated = [m for m, s in by_user.get(user, []) if s < t or (same_second_removed and s == t)]
    counts = counts.astype(float)
    counts[rated] = -1.0  # removed: below every count, so never above the rated movie
    target = counts[catalogue[movie]]
    above = int((counts > target).sum())
    tied = int((counts == target).sum()) - 1
    ranks = np.arange(above, above + tied + 1)
    hits += (ranks < k).mean()
    gains += np.where(ranks < 10, 1 / np.log2(ranks + 2), 0.0).mean()
  return hits / len(latest), gains / len(latest)


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
