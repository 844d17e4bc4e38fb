"""IndexBuilder executor: embed the catalogue, build ScaNN, measure it, bless or not."""

import json
import os
from typing import Any, Dict, List

from absl import logging
import numpy as np
import tensorflow_transform as tft
from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import beam_embedding
from components import blessing as blessing_lib
from components import examples_io
from bundle import scann_index
from components.retrieval_evaluator import eval_set as eval_set_lib
from modules import features as F
from modules import retrieval_export

MODEL_KEY = "model"
CANDIDATES_KEY = "candidates"
EXAMPLES_KEY = "examples"
TRANSFORM_GRAPH_KEY = "transform_graph"
INDEX_KEY = "index"
BLESSING_KEY = "blessing"
MIN_RECALL_KEY = "min_recall"
EXACT_BELOW_KEY = "exact_below"
SEARCH_FRACTION_KEY = "search_fraction"
MIN_LEAVES_SEARCHED_KEY = "min_leaves_searched"
REORDER_KEY = "reorder"
MAX_QUERIES_KEY = "max_queries"
SEED_KEY = "seed"
RECALL_METRIC = "recall_at_10"


def held_out_queries(data: eval_set_lib.EvalSet, model_pair, max_queries: int,
                     seed: int) -> np.ndarray:
  """Query embeddings of a seeded sample of eval users (real queries, not indexed vectors)."""
  users = data.users_with_eval
  rng = np.random.default_rng(seed)
  if len(users) > max_queries:
    users = np.sort(rng.choice(users, size=max_queries, replace=False))
  return model_pair.embed_query_examples([data.user_query_serialized[u] for u in users])


def cold_start_count(tft_output, movie_ids) -> int:
  """Catalogue movies outside Transform's movie vocabulary (never rated in training)."""
  vocab = set(v.decode() if isinstance(v, bytes) else v for v in
              tft_output.vocabulary_by_name(F.VOCABULARY_NAMES[F.MOVIE_ID]))
  return int(sum(m not in vocab for m in movie_ids))


class Executor(base_beam_executor.BaseBeamExecutor):
  """Embeds the catalogue in a Beam pipeline (components/beam_embedding.py), then builds
  and measures the ScaNN searcher in memory."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
    model_dir = path_utils.serving_model_dir(model.uri)
    pair = retrieval_export.RetrievalModelPair(model_dir)
    candidates = artifact_utils.get_single_instance(input_dict[CANDIDATES_KEY])
    data = eval_set_lib.from_artifacts(
        artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY]), candidates,
        with_train=False)  # only the catalogue and the eval users' queries are needed
    embedded = beam_embedding.embed_with_beam(
        self._make_beam_pipeline, os.path.join(self._get_tmp_dir(), "embeddings"),
        {"model": model_dir}, examples_io.split_pattern(candidates, F.CATALOG_SPLIT))
    embeddings, ids = embedded["model"].embed_candidate_examples(data.catalogue_serialized)
    queries = held_out_queries(data, pair, int(exec_properties[MAX_QUERIES_KEY]),
                               int(exec_properties[SEED_KEY]))
    config = scann_index.IndexConfig.for_size(
        len(embeddings), exact_below=int(exec_properties[EXACT_BELOW_KEY]),
        search_fraction=float(exec_properties[SEARCH_FRACTION_KEY]),
        min_leaves_searched=int(exec_properties[MIN_LEAVES_SEARCHED_KEY]),
        reorder=int(exec_properties[REORDER_KEY]))
    searcher, info = scann_index.build_and_measure(embeddings, queries, config)
    tft_output = tft.TFTransformOutput(
        artifact_utils.get_single_instance(input_dict[TRANSFORM_GRAPH_KEY]).uri)
    info["cold_start_candidates"] = cold_start_count(tft_output, ids)
    info["model_uri"] = model.uri

    index = artifact_utils.get_single_instance(output_dict[INDEX_KEY])
    scann_index.save(index.uri, searcher, embeddings,
                     examples_io.movie_records(data.catalogue_serialized), info)
    index.set_int_custom_property("num_candidates", len(embeddings))
    index.set_string_custom_property("search_mode", config.mode)
    blessing_lib.record_metrics(index, {k: v for k, v in info.items()
                                        if k not in ("config", "num_candidates")})

    min_recall = float(exec_properties[MIN_RECALL_KEY])
    decision = blessing_lib.decide({RECALL_METRIC: info[RECALL_METRIC]},
                                   {RECALL_METRIC: min_recall})
    logging.info("IndexBuilder: %s index of %d candidates, %s", config.mode,
                 len(embeddings), json.dumps({k: v for k, v in info.items() if k != "config"}))
    blessing_lib.write_blessing(artifact_utils.get_single_instance(output_dict[BLESSING_KEY]),
                                decision, model, blessing_lib.RETRIEVAL_INDEX)
