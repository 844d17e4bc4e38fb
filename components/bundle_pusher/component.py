"""BundlePusher: pushes retrieval model + index (+ ranking model) as one serving bundle.

TFX's Pusher pushes one model gated on one blessing; the serving bundle needs the query
model, the index and the user table together, and only when both the model (from the
RetrievalEvaluator) and the index (from the IndexBuilder), and the ranking model when one
is given (from TFX's Evaluator), are blessed. The ranking model is also converted to
TensorFlow Lite. Nothing is written otherwise; the PushedModel artifact then has
`pushed` = 0 and the reasons. The TwoStageEvaluator's blessing (`order_blessing`), when
given, does not gate the push: the manifest records it (`ranking_order`), and serving
orders by ranking score by default only when it is blessed.
Layout of a bundle: bundle/layout.py.
"""

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import component_spec
from tfx.types import standard_artifacts

from components.artifact_types import RetrievalIndex
from components.bundle_pusher import executor


class BundlePusherSpec(types.ComponentSpec):
  PARAMETERS = {executor.SERVING_DIR_KEY: component_spec.ExecutionParameter(type=str)}
  INPUTS = {
      executor.MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
      executor.MODEL_BLESSING_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.ModelBlessing),
      executor.INDEX_KEY: component_spec.ChannelParameter(type=RetrievalIndex),
      executor.INDEX_BLESSING_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.ModelBlessing),
      executor.RANKING_MODEL_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.Model, optional=True),
      executor.RANKING_BLESSING_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.ModelBlessing, optional=True),
      executor.ORDER_BLESSING_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.ModelBlessing, optional=True),
      executor.EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
  }
  OUTPUTS = {
      executor.PUSHED_MODEL_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.PushedModel),
  }


class BundlePusher(base_component.BaseComponent):
  SPEC_CLASS = BundlePusherSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, model: types.BaseChannel, model_blessing: types.BaseChannel,
               index: types.BaseChannel, index_blessing: types.BaseChannel,
               examples: types.BaseChannel, serving_dir: str,
               ranking_model: Optional[types.BaseChannel] = None,
               ranking_blessing: Optional[types.BaseChannel] = None,
               order_blessing: Optional[types.BaseChannel] = None):
    if (ranking_model is None) != (ranking_blessing is None):
      raise ValueError("give both ranking_model and ranking_blessing, or neither")
    if order_blessing is not None and ranking_model is None:
      raise ValueError("order_blessing (the TwoStageEvaluator's) needs a ranking_model")
    super().__init__(spec=BundlePusherSpec(
        model=model, model_blessing=model_blessing, index=index,
        index_blessing=index_blessing, ranking_model=ranking_model,
        ranking_blessing=ranking_blessing, order_blessing=order_blessing,
        examples=examples, serving_dir=serving_dir,
        pushed_model=types.Channel(type=standard_artifacts.PushedModel)))
