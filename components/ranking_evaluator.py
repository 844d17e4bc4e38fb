"""The RankingEvaluator's executor: TFX's Evaluator (TFMA), its blessing tagged with what
it blesses (blessing.MODEL_KIND_KEY), so a compiled resolver can tell it from the
retrieval model's."""

from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_component_specs

from components import blessing


class Executor(evaluator_executor.Executor):

  def Do(self, input_dict, output_dict, exec_properties) -> None:
    super().Do(input_dict, output_dict, exec_properties)
    for artifact in output_dict.get(standard_component_specs.BLESSING_KEY, []):
      artifact.set_string_custom_property(blessing.MODEL_KIND_KEY, blessing.RANKING)


EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
