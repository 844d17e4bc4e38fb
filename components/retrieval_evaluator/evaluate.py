"""Scoring functions (a trained model or a baseline) → the metrics of metrics.py."""

from typing import Callable, Dict

import numpy as np

from components.retrieval_evaluator import metrics
from components.retrieval_evaluator.eval_set import EvalSet


def evaluate_scores(eval_set: EvalSet, score_rows: Callable[[np.ndarray], np.ndarray],
                    score_users: Callable[[np.ndarray], np.ndarray]) -> Dict[str, float]:
  """All metrics. score_rows takes eval-row indices, score_users user indices."""
  result = metrics.factorized_top_k(score_rows, eval_set.eval_items, eval_set.eval_users,
                                    eval_set.seen)
  result.update(metrics.per_user(score_users, eval_set.eval_items_by_user, eval_set.seen))
  result["eval_ratings"] = int(len(eval_set.eval_items))
  result["catalogue_size"] = int(len(eval_set.catalogue_ids))
  return result


def evaluate_model(model_pair, eval_set: EvalSet) -> Dict[str, float]:
  """Metrics of exported retrieval towers: anything with RetrievalModelPair's
  embed_candidate_examples / embed_query_examples (the pair itself, or the Beam step's
  components.beam_embedding.EmbeddedExamples)."""
  candidates, ids = model_pair.embed_candidate_examples(eval_set.catalogue_serialized)
  assert list(ids) == list(eval_set.catalogue_ids), "candidate model reordered the catalogue"
  row_queries = model_pair.embed_query_examples(eval_set.eval_serialized)
  users = eval_set.users_with_eval
  user_queries = np.zeros((len(eval_set.user_ids), candidates.shape[1]), np.float32)
  if len(users):
    user_queries[users] = model_pair.embed_query_examples(
        [eval_set.user_query_serialized[u] for u in users])
  return evaluate_scores(eval_set, lambda rows: row_queries[rows] @ candidates.T,
                         lambda us: user_queries[us] @ candidates.T)
