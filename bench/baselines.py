"""Non-learned retrieval baselines scored on the same EvalSet rows as the model.

Every baseline reads, for an eval rating at time t, only the user's training movies rated
strictly before t (EvalSet.seen_before), as the model's query does; item-item statistics
come from the training split, as the model's weights do.

popularity    components/retrieval_evaluator/evaluate.py (counts before each row's time).
EASE          Steck 2019, "Embarrassingly Shallow Autoencoders": a closed-form item-item
              model B = -P / diag(P) with P = (XᵀX + λI)⁻¹ and diag(B) = 0; scores = x B
              with x the user's earlier movies. Dense items × items inverse: fine up to
              ml-1m (3.7k movies), not ml-25m.
EASE, recent  the same B, x weighting each earlier movie by its recency in the user's
              sequence: 1 + boost · 2^(-position / half_life) (position 0 = newest).
co-occurrence movies rated soon after the user's latest earlier movie: C[i, j] counts
              training sequences where j follows i within `window` ratings.
"""

from typing import Callable

import numpy as np

from components.retrieval_evaluator.eval_set import EvalSet


def interactions(eval_set: EvalSet) -> np.ndarray:
  """Binary users × catalogue matrix of training ratings."""
  x = np.zeros((len(eval_set.user_ids), len(eval_set.catalogue_ids)), np.float32)
  for user, items in enumerate(eval_set.user_train_items):
    x[user, items] = 1.0
  return x


def ease_weights(eval_set: EvalSet, l2: float = 500.0) -> np.ndarray:
  """EASE's item-item matrix B (items × items, zero diagonal)."""
  x = interactions(eval_set).astype(np.float64)
  gram = x.T @ x
  gram[np.diag_indices_from(gram)] += l2
  p = np.linalg.inv(gram)
  b = -p / np.diag(p)
  b[np.diag_indices_from(b)] = 0.0
  return b.astype(np.float32)


def _earlier_weights(eval_set: EvalSet, rows: np.ndarray, weigh: Callable) -> np.ndarray:
  """[len(rows), catalogue]: each row's earlier movies weighted by weigh(newest-first count)."""
  x = np.zeros((len(rows), len(eval_set.catalogue_ids)), np.float32)
  for i, earlier in enumerate(eval_set.seen_before(rows)):
    if len(earlier):
      x[i, earlier[::-1]] = weigh(len(earlier))  # oldest first -> newest first
  return x


def ease_scorer(eval_set: EvalSet, l2: float = 500.0, half_life: float = 0.0,
                boost: float = 0.0):
  """score_rows for EASE; with half_life > 0, on the recency-weighted earlier movies."""
  b = ease_weights(eval_set, l2)
  if half_life > 0:
    weigh = lambda n: 1.0 + boost * 2.0 ** (-np.arange(n) / half_life)
  else:
    weigh = lambda n: 1.0
  return lambda rows: _earlier_weights(eval_set, rows, weigh) @ b


def cooccurrence_scorer(eval_set: EvalSet, window: int = 5):
  """score_rows for last-item co-occurrence."""
  n = len(eval_set.catalogue_ids)
  counts = np.zeros((n, n), np.float32)
  for items in eval_set.user_train_items:  # oldest first
    for gap in range(1, window + 1):
      np.add.at(counts, (items[:-gap], items[gap:]), 1.0)

  def score_rows(rows):
    out = np.zeros((len(rows), n), np.float32)
    for i, earlier in enumerate(eval_set.seen_before(rows)):
      if len(earlier):
        out[i] = counts[earlier[-1]]
    return out
  return score_rows
