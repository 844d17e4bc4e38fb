"""RetrievalEvaluator: TFMA has no factorized top-k, so retrieval is judged here.

Scores every eval rating against the whole catalogue with the exported towers (exact,
brute force), writes the metrics (ModelEvaluation) and a ModelBlessing: blessed when the
thresholded metrics reach their bounds and the model is no worse than the last blessed
model (resolved from MLMD by the pipeline and re-evaluated on the same data) by more
than `max_regression`.
"""

import json
from typing import Dict, Optional, Union

from tfx import types
from tfx.orchestration import data_types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import component_spec
from tfx.types import standard_artifacts

from components.retrieval_evaluator import executor


class RetrievalEvaluatorSpec(types.ComponentSpec):
  PARAMETERS = {
      executor.THRESHOLDS_KEY: component_spec.ExecutionParameter(type=str),
      executor.MAX_REGRESSION_KEY: component_spec.ExecutionParameter(type=float),
      executor.MUST_BEAT_POPULARITY_KEY: component_spec.ExecutionParameter(type=int),
  }
  INPUTS = {
      executor.MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
      executor.BASELINE_MODEL_KEY: component_spec.ChannelParameter(
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


class RetrievalEvaluator(base_component.BaseComponent):
  """Judges a two-tower retrieval model on the eval split over the whole catalogue.

  Args:
    model: the retrieval Trainer's Model.
    examples: ratings Examples (train split: movies to exclude; eval split: the test).
    candidates: the movie catalogue Examples.
    thresholds: metric name → minimum, e.g. {"hr_at_100": 0.5}; see metrics.py.
    baseline_model: the last blessed retrieval Model (optional).
    max_regression: largest allowed drop of a thresholded metric below the baseline's.
    must_beat_popularity: bless only a model above popularity (scored on the same rows)
      on evaluate.REFERENCE_METRICS.
  """

  SPEC_CLASS = RetrievalEvaluatorSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self, model: types.BaseChannel, examples: types.BaseChannel,
               candidates: types.BaseChannel,
               thresholds: Union[Dict[str, float], data_types.RuntimeParameter],
               baseline_model: Optional[types.BaseChannel] = None,
               max_regression: Union[float, data_types.RuntimeParameter] = 0.0,
               must_beat_popularity: bool = True):
    if isinstance(thresholds, dict):
      thresholds = json.dumps(thresholds, sort_keys=True)
    if not isinstance(max_regression, data_types.RuntimeParameter):
      max_regression = float(max_regression)
    super().__init__(spec=RetrievalEvaluatorSpec(
        model=model, baseline_model=baseline_model, examples=examples,
        candidates=candidates, thresholds=thresholds, max_regression=max_regression,
        must_beat_popularity=int(must_beat_popularity),
        evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
        blessing=types.Channel(type=standard_artifacts.ModelBlessing)))
