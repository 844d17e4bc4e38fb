"""BundlePusher: pushes retrieval model + index as one versioned serving bundle.

TFX's Pusher pushes one model gated on one blessing; the serving bundle needs the query
model, the index and the user table together, and only when both the model (from the
RetrievalEvaluator) and the index (from the IndexBuilder) are blessed. Nothing is
written otherwise; the PushedModel artifact then has `pushed` = 0 and the reasons.
Layout of a bundle: serving/bundle_layout.py.
"""

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
               examples: types.BaseChannel, serving_dir: str):
    super().__init__(spec=BundlePusherSpec(
        model=model, model_blessing=model_blessing, index=index,
        index_blessing=index_blessing, examples=examples, serving_dir=serving_dir,
        pushed_model=types.Channel(type=standard_artifacts.PushedModel)))
