"""Scoring functions (a trained model or a reference) → the metrics of metrics.py."""

from typing import Callable, Dict

import numpy as np

from components.retrieval_evaluator import metrics
from components.retrieval_evaluator.eval_set import EvalSet

# The model must beat popularity (computed on the same rows, in the same execution) on
# these to be blessed: a retrieval model that does not is not worth serving.
REFERENCE_METRICS = ("hr_at_10", "ndcg_at_10")


def evaluate_scores(eval_set: EvalSet,
                    score_rows: Callable[[np.ndarray], np.ndarray]) -> Dict[str, float]:
  """All metrics. score_rows takes eval-row indices."""
  result = metrics.next_item(score_rows, eval_set.eval_items, eval_set.rated_by_then)
  result["eval_ratings"] = int(len(eval_set.eval_items))
  result["eval_users"] = int(len(eval_set.users_with_eval))
  result["catalogue_size"] = int(len(eval_set.catalogue_ids))
  return result


def popularity_before(eval_set: EvalSet, rows: np.ndarray) -> np.ndarray:
  """[len(rows), catalogue] scores: each movie's number of training ratings made strictly
  before the row's time (popularity as a live system knew it then). Rows are visited in
  time order so the counts are built incrementally."""
  scores = np.empty((len(rows), len(eval_set.catalogue_ids)), np.float32)
  counts = np.zeros(len(eval_set.catalogue_ids), np.float64)
  counted = 0
  for i in np.argsort(eval_set.eval_seconds[rows], kind="stable"):
    end = eval_set.training_before(eval_set.eval_seconds[rows[i]])
    if end > counted:
      counts += np.bincount(eval_set.train_items[counted:end], minlength=len(counts))
      counted = end
    scores[i] = counts
  return scores


def evaluate_popularity(eval_set: EvalSet) -> Dict[str, float]:
  """The reference every model must beat: movies by causal rating count."""
  return evaluate_scores(eval_set, lambda rows: popularity_before(eval_set, rows))


def evaluate_model(model_pair, eval_set: EvalSet) -> Dict[str, float]:
  """Metrics of exported retrieval towers: anything with RetrievalModelPair's
  embed_candidate_examples / embed_query_examples (the pair itself, or the Beam step's
  components.beam_embedding.EmbeddedExamples). Each eval row's query is embedded by the
  query tower's example signature, which reads only the history before the row."""
  candidates, ids = model_pair.embed_candidate_examples(eval_set.catalogue_serialized)
  assert list(ids) == list(eval_set.catalogue_ids), "candidate model reordered the catalogue"
  row_queries = model_pair.embed_query_examples(eval_set.eval_serialized)
  return evaluate_scores(eval_set, lambda rows: row_queries[rows] @ candidates.T)
