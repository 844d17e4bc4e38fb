"""IndexBuilder: a ScaNN index over the candidate embeddings, measured against exact search.

Embeds the whole catalogue (the candidate Examples, a real input channel) with the
retrieval model's candidate tower, builds a searcher whose configuration scales with the
catalogue (scann_index.IndexConfig.for_size), measures recall@10 against brute force on
held-out user queries, and blesses the index when recall reaches `min_recall`.
"""

from tfx import types
from tfx.orchestration import data_types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import component_spec
from tfx.types import standard_artifacts

from components.artifact_types import RetrievalIndex
from components.index_builder import executor
from bundle import scann_index


class IndexBuilderSpec(types.ComponentSpec):
  PARAMETERS = {
      executor.MIN_RECALL_KEY: component_spec.ExecutionParameter(type=float),
      executor.EXACT_BELOW_KEY: component_spec.ExecutionParameter(type=int),
      executor.SEARCH_FRACTION_KEY: component_spec.ExecutionParameter(type=float),
      executor.MIN_LEAVES_SEARCHED_KEY: component_spec.ExecutionParameter(type=int),
      executor.REORDER_KEY: component_spec.ExecutionParameter(type=int),
      executor.MAX_QUERIES_KEY: component_spec.ExecutionParameter(type=int),
      executor.SEED_KEY: component_spec.ExecutionParameter(type=int),
  }
  INPUTS = {
      executor.MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
      executor.CANDIDATES_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.Examples),
      executor.EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
      executor.TRANSFORM_GRAPH_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.TransformGraph),
  }
  OUTPUTS = {
      executor.INDEX_KEY: component_spec.ChannelParameter(type=RetrievalIndex),
      executor.BLESSING_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.ModelBlessing),
  }


class IndexBuilder(base_component.BaseComponent):
  """Args:
    model: the retrieval Trainer's Model.
    candidates: the movie catalogue Examples (everything indexed).
    examples: ratings Examples; held-out queries come from the eval split's users.
    transform_graph: Transform's output (counts catalogue movies unknown to training).
    min_recall: recall@10 against exact search the index must reach to be blessed.
    exact_below: catalogues smaller than this get exact (brute-force) search.
    search_fraction: share of tree leaves searched per query...
    min_leaves_searched: ... but at least this many (all of them in a smaller tree).
    reorder: exact re-scoring of this many approximate candidates.
    max_queries, seed: size and seed of the held-out query sample.
  """

  SPEC_CLASS = IndexBuilderSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self, model: types.BaseChannel, candidates: types.BaseChannel,
               examples: types.BaseChannel, transform_graph: types.BaseChannel,
               min_recall: float,
               exact_below: int = scann_index.DEFAULT_EXACT_BELOW,
               search_fraction: float = scann_index.DEFAULT_SEARCH_FRACTION,
               min_leaves_searched: int = scann_index.DEFAULT_MIN_LEAVES_SEARCHED,
               reorder: int = scann_index.DEFAULT_REORDER, max_queries: int = 1000,
               seed: int = 42):
    super().__init__(spec=IndexBuilderSpec(
        model=model, candidates=candidates, examples=examples,
        transform_graph=transform_graph,
        min_recall=(min_recall if isinstance(min_recall, data_types.RuntimeParameter)
                    else float(min_recall)),
        exact_below=int(exact_below), search_fraction=float(search_fraction),
        min_leaves_searched=int(min_leaves_searched),
        reorder=int(reorder), max_queries=int(max_queries), seed=int(seed),
        index=types.Channel(type=RetrievalIndex),
        blessing=types.Channel(type=standard_artifacts.ModelBlessing)))
