"""TwoStageEvaluator: does the second stage's order beat retrieval order? (issue 12)

On the eval split (at most max_eval_ratings eval ratings: above it, that many drawn at
random, since TFMA holds the lists in memory), each eval rating's candidate list is the
retrieval model's N best unseen movies; the list ordered by ranking score (the ranking
model's sequence scorer blended with the retrieval score, as serving orders it) is
compared with the list as retrieved: HR@10 and NDCG@10 on the same rows and candidates
(evaluate.py), computed by TFMA with each eval rating as a query, overall and by the
user's history length (tfma_lists.py; the evaluation artifact holds TFMA's EvalResult,
one "model" per order, and metrics.json). Writes the metrics (ModelEvaluation) and a
ModelBlessing of the ranking model's order (model_kind "ranking_order"): blessed when
the two-stage NDCG@10 is above retrieval order's × (1 + min_gain) and, given the last
ranker whose order was blessed, at most max_regression below its two-stage NDCG@10 on
the same candidates. The BundlePusher records the decision in the bundle's manifest,
and serving orders by ranking score by default only when it is blessed (otherwise by
retrieval score, saying why). A Beam component: TFMA runs on the pipeline's Beam
runner.
"""

from typing import Optional, Union

from tfx import types
from tfx.orchestration import data_types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import component_spec
from tfx.types import standard_artifacts

from components.two_stage_evaluator import evaluate
from components.two_stage_evaluator import executor


class TwoStageEvaluatorSpec(types.ComponentSpec):
  PARAMETERS = {
      executor.LIST_SIZE_KEY: component_spec.ExecutionParameter(type=int),
      executor.MAX_EVAL_RATINGS_KEY: component_spec.ExecutionParameter(type=int),
      executor.MIN_GAIN_KEY: component_spec.ExecutionParameter(type=float),
      executor.MAX_REGRESSION_KEY: component_spec.ExecutionParameter(type=float),
  }
  INPUTS = {
      executor.RETRIEVAL_MODEL_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.Model),
      executor.RANKING_MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
      executor.BASELINE_RANKING_MODEL_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.Model, optional=True),
      executor.EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
      executor.CANDIDATES_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.Examples),
  }
  OUTPUTS = {
      executor.EVALUATION_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.ModelEvaluation),
      executor.BLESSING_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.ModelBlessing),
  }


class TwoStageEvaluator(base_component.BaseComponent):
  """Args:
    retrieval_model: the retrieval Trainer's Model (its candidates).
    ranking_model: the ranking Trainer's Model (its sequence scorer orders them).
    examples: ratings Examples (eval split: the test; train split: histories, seen movies).
    candidates: the movie catalogue Examples.
    list_size: candidates retrieved per eval rating (serving's default is 100).
    max_eval_ratings: eval ratings evaluated at most; above it, that many drawn at random
      (TFMA's memory grows with the lists).
    min_gain: the two-stage NDCG@10 must be above retrieval order's × (1 + min_gain).
    baseline_ranking_model: the last ranking model whose order was blessed (optional):
      its scorer orders the same candidates, and the two-stage NDCG@10 may be at most
      max_regression (absolute) below that.
  """

  SPEC_CLASS = TwoStageEvaluatorSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self, retrieval_model: types.BaseChannel, ranking_model: types.BaseChannel,
               examples: types.BaseChannel, candidates: types.BaseChannel,
               list_size: int = 100,
               max_eval_ratings: int = evaluate.MAX_EVAL_RATINGS,
               min_gain: Union[float, data_types.RuntimeParameter] = 0.0,
               baseline_ranking_model: Optional[types.BaseChannel] = None,
               max_regression: float = 0.0):
    if not isinstance(min_gain, data_types.RuntimeParameter):
      min_gain = float(min_gain)
    super().__init__(spec=TwoStageEvaluatorSpec(
        retrieval_model=retrieval_model, ranking_model=ranking_model, examples=examples,
        candidates=candidates, list_size=int(list_size),
        max_eval_ratings=int(max_eval_ratings), min_gain=min_gain,
        baseline_ranking_model=baseline_ranking_model, max_regression=float(max_regression),
        evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
        blessing=types.Channel(type=standard_artifacts.ModelBlessing)))
