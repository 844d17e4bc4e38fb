"""The TwoStageEvaluator on a real pipeline run: its figures are what the served
recommender returns for the eval rows, and its gate decides serving's default order, in
both directions."""
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from components import blessing as blessing_lib
from components import examples_io
from components.two_stage_evaluator import executor as two_stage
from modules import features as F
from serving.recommender import Recommender
from serving.retriever import latest_bundle_path


def served_rates(recommender, evals, order_by, list_size):
  """Per eval row, HR@10 and NDCG@10 of the recommender's answer as of the row's time (a
  backtest: the user's earlier ratings only) with the given order."""
  hits, gains = [], []
  for user, movie, t in zip(evals[F.USER_ID], evals[F.MOVIE_ID], evals[F.TIMESTAMP]):
    items = recommender.recommend(user, k=10, candidates=list_size, as_of=int(t),
                                  order_by=order_by)["items"]
    ids = [i["movie_id"] for i in items]
    hits.append(movie in ids)
    gains.append(1 / math.log2(ids.index(movie) + 2) if movie in ids else 0.0)
  return np.array(hits, np.float64), np.array(gains)


def history_buckets(examples, evals):
  """Per eval row, the TwoStageEvaluator's name for its slice: how many training ratings
  its user had made before it, bucketed."""
  train = examples_io.split_columns(examples, F.TRAIN_SPLIT,
                                    {F.USER_ID: tf.string, F.TIMESTAMP: tf.int64})
  before = [int(np.sum((train[F.USER_ID] == user) & (train[F.TIMESTAMP] < t)))
            for user, t in zip(evals[F.USER_ID], evals[F.TIMESTAMP])]
  bounds = [(50, "50+"), (20, "20-49"), (5, "5-19"), (1, "1-4"), (0, "0")]
  return np.array([f"history_length={next(name for low, name in bounds if n >= low)}"
                   for n in before])


def eval_ratings(pushed_artifacts):
  """The pushed run's eval ratings: {user id, movie id, timestamp: [rows]}."""
  return examples_io.split_columns(pushed_artifacts["examples"][0], F.EVAL_SPLIT, {
      F.USER_ID: tf.string, F.MOVIE_ID: tf.string, F.TIMESTAMP: tf.int64})


def newest_bundle(config) -> Recommender:
  return Recommender(latest_bundle_path(config.serving_dir))


def test_two_stage_figures_are_what_serving_returns_for_the_eval_rows(pushed_run,
                                                                      pushed_artifacts):
  config, run, _ = pushed_run
  report = json.load(open(os.path.join(run.output("TwoStageEvaluator", "evaluation").uri,
                                       two_stage.METRICS_FILE)))
  metrics = report["metrics"]
  evals = eval_ratings(pushed_artifacts)
  assert metrics["eval_ratings"] == len(evals[F.USER_ID])
  recommender = newest_bundle(config)
  tolerance = 1.5 / len(evals[F.USER_ID])  # a tie ordered otherwise may move one row
  buckets = history_buckets(pushed_artifacts["examples"][0], evals)
  assert {name: s["eval_ratings"] for name, s in report["slices"].items()} == \
      {name: int(np.sum(buckets == name)) for name in set(buckets)}
  for order, prefix in (("retrieval_score", "retrieval_order"), ("ranking_score", "two_stage")):
    # The figures are TFMA's (query-keyed NDCG@10, HitRate@10), overall and by slice.
    hits, gains = served_rates(recommender, evals, order, metrics["candidates"])
    assert hits.mean() == pytest.approx(metrics[f"{prefix}_hr_at_10"], abs=tolerance), order
    assert gains.mean() == pytest.approx(metrics[f"{prefix}_ndcg_at_10"], abs=tolerance), order
    for name in set(buckets):
      rows, figures = buckets == name, report["slices"][name]
      slack = 1.5 / rows.sum()
      assert hits[rows].mean() == pytest.approx(figures[f"{prefix}_hr_at_10"], abs=slack)
      assert gains[rows].mean() == pytest.approx(figures[f"{prefix}_ndcg_at_10"], abs=slack)
  # The run's decision is the gate's rule applied to its figures, and the bundle says so.
  blessed = metrics["two_stage_ndcg_at_10"] > metrics["retrieval_order_ndcg_at_10"]
  assert report["blessed"] == blessed
  assert recommender.manifest["ranking_order"]["blessed"] == blessed


def evaluate_with(pushed_run, pushed_artifacts, tmp_path, min_gain, baseline=None,
                  max_regression=0.0, max_eval_ratings=None):
  """The TwoStageEvaluator's executor on the run's artifacts; its blessing."""
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
  evaluation.uri, blessing.uri = str(tmp_path / "evaluation"), str(tmp_path / "blessing")
  inputs = {two_stage.RETRIEVAL_MODEL_KEY: [pushed_artifacts["model"]],
            two_stage.RANKING_MODEL_KEY: [pushed_artifacts["ranking"]],
            two_stage.EXAMPLES_KEY: pushed_artifacts["examples"],
            two_stage.CANDIDATES_KEY: [pushed_artifacts["candidates"]]}
  if baseline is not None:
    inputs[two_stage.BASELINE_RANKING_MODEL_KEY] = [baseline]
  two_stage.Executor().Do(
      inputs, {two_stage.EVALUATION_KEY: [evaluation], two_stage.BLESSING_KEY: [blessing]},
      {two_stage.MIN_GAIN_KEY: min_gain, two_stage.LIST_SIZE_KEY: 100,
       two_stage.MAX_REGRESSION_KEY: max_regression,
       two_stage.MAX_EVAL_RATINGS_KEY: max_eval_ratings})
  return blessing


def test_above_its_limit_the_evaluator_scores_a_sample_of_the_eval_rows(
    pushed_run, pushed_artifacts, tmp_path):
  """Its figures are then what serving returns for the sampled rows, and say how many."""
  from components.two_stage_evaluator import evaluate  # pylint: disable=g-import-not-at-top
  config, _, _ = pushed_run
  evals = eval_ratings(pushed_artifacts)
  count = len(evals[F.USER_ID])
  evaluate_with(pushed_run, pushed_artifacts, tmp_path, 0.0, max_eval_ratings=count // 3)
  metrics = json.load(open(tmp_path / "evaluation" / two_stage.METRICS_FILE))["metrics"]
  assert (metrics["eval_ratings"], metrics["eval_ratings_available"]) == (count // 3, count)
  rows = evaluate.sample_rows(count, count // 3)
  recommender = newest_bundle(config)
  hits, gains = served_rates(recommender, {k: v[rows] for k, v in evals.items()},
                             "ranking_score", metrics["candidates"])
  tolerance = 1.5 / len(rows)
  assert hits.mean() == pytest.approx(metrics["two_stage_hr_at_10"], abs=tolerance)
  assert gains.mean() == pytest.approx(metrics["two_stage_ndcg_at_10"], abs=tolerance)


@pytest.mark.parametrize("min_gain,blessed", [(-1.0, True), (100.0, False)])
def test_the_order_gate_decides_the_default_order_both_ways(pushed_run, pushed_artifacts,
                                                            tmp_path, min_gain, blessed):
  from components.bundle_pusher import executor as pusher  # pylint: disable=g-import-not-at-top
  blessing = evaluate_with(pushed_run, pushed_artifacts, tmp_path, min_gain)
  assert blessing_lib.is_blessed(blessing) == blessed
  assert blessing.get_string_custom_property(blessing_lib.MODEL_KIND_KEY) == "ranking_order"
  path = pusher.write_bundle(str(tmp_path / "bundles"), pushed_artifacts["model"],
                             pushed_artifacts["index"], pushed_artifacts["examples"],
                             pushed_artifacts["ranking"], blessing)
  recommender = Recommender(path)
  user = next(iter(recommender.retriever.users))
  result = recommender.recommend(user, k=5)
  if blessed:
    assert result["order_by"] == "ranking_score" and "order_fallback" not in result
  else:
    assert result["order_by"] == "retrieval_score"
    assert "not blessed" in result["order_fallback"]
    assert "vs retrieval order x 101" in result["order_fallback"]  # the failed check
    # Asked for by name, the unblessed order is still served.
    assert recommender.recommend(user, k=5, order_by="ranking_score")["order_by"] == \
        "ranking_score"


@pytest.mark.parametrize("max_regression,blessed", [(0.0, True), (-0.01, False)])
def test_the_order_gate_compares_with_the_last_blessed_ranker_both_ways(
    pushed_run, pushed_artifacts, tmp_path, max_regression, blessed):
  """The baseline: another artifact of the same ranking model (its scorer orders the
  same candidates, so its figures must equal this model's). Allowed no drop it passes;
  required to gain 0.01 NDCG@10 over itself it cannot."""
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  ranking = pushed_artifacts["ranking"]
  baseline = standard_artifacts.Model()
  baseline.uri, baseline.id = ranking.uri, ranking.id + 1000
  blessing = evaluate_with(pushed_run, pushed_artifacts, tmp_path, -1.0, baseline,
                           max_regression)
  report = json.load(open(tmp_path / "evaluation" / two_stage.METRICS_FILE))
  metrics = report["metrics"]
  for metric in ("hr_at_10", "ndcg_at_10"):
    assert metrics[f"baseline_two_stage_{metric}"] == pytest.approx(metrics[f"two_stage_{metric}"])
  assert report["baseline_ranking_model"]["id"] == baseline.id
  assert blessing_lib.is_blessed(blessing) == blessed
  assert blessing.get_int_custom_property("baseline_model_id") == baseline.id
  reasons = blessing.get_string_custom_property(blessing_lib.REASONS_KEY)
  assert "vs the last blessed ranker's" in reasons


def test_the_order_gate_rules():
  figures = {"two_stage_ndcg_at_10": 0.125, "retrieval_order_ndcg_at_10": 0.12}
  assert two_stage.decide(figures, 0.0).blessed
  assert not two_stage.decide(figures, 0.1).blessed  # 0.125 is not above 0.12 x 1.1
  with_baseline = dict(figures, baseline_two_stage_ndcg_at_10=0.13)
  assert two_stage.decide(with_baseline, 0.0, max_regression=0.01).blessed  # 0.005 drop
  kept_out = two_stage.decide(with_baseline, 0.0, max_regression=0.001)
  assert not kept_out.blessed and kept_out.reasons == [
      "ndcg_at_10 = 0.1250 vs the last blessed ranker's 0.1300 (allowed drop 0.0010)"]
  both = two_stage.decide(with_baseline, 0.1, max_regression=0.001)
  assert not both.blessed and len(both.reasons) == 2  # each failed check said


def test_tfma_figures_count_a_list_without_the_next_movie_as_a_miss(tmp_path):
  """Three lists of 12, worked out by hand: the movie rated next first / third, not
  retrieved at all, eleventh / first."""
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from components.two_stage_evaluator import tfma_lists  # pylint: disable=g-import-not-at-top
  labels = np.zeros((3, 12), bool)
  labels[0, 0] = labels[2, 10] = True
  as_retrieved = np.tile(np.arange(12), (3, 1))
  ranked = as_retrieved.copy()
  ranked[0, :3] = [1, 2, 0]
  ranked[2] = [10] + list(range(10)) + [11]
  orders = {"retrieval_order": as_retrieved, "two_stage": ranked}
  with beam.Pipeline() as pipeline:
    tfma_lists.evaluate(pipeline, list(tfma_lists.examples(orders, labels, [0, 3, 70])),
                        list(orders), str(tmp_path))
  figures = tfma_lists.load(str(tmp_path), list(orders))
  assert figures[""] == pytest.approx({
      "retrieval_order_hr_at_10": 1 / 3, "retrieval_order_ndcg_at_10": 1 / 3,
      "two_stage_hr_at_10": 2 / 3, "two_stage_ndcg_at_10": (1 / math.log2(4) + 1) / 3})
  assert figures["history_length=50+"] == pytest.approx({
      "retrieval_order_hr_at_10": 0.0, "retrieval_order_ndcg_at_10": 0.0,
      "two_stage_hr_at_10": 1.0, "two_stage_ndcg_at_10": 1.0})
