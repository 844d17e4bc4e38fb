"""Non-learned retrieval baselines scored on the same EvalSet as the model.

popularity  every user gets the movies ordered by training rating count.
EASE        Steck 2019, "Embarrassingly Shallow Autoencoders": a closed-form item-item
            model B = -P / diag(P) with P = (XᵀX + λI)⁻¹ and diag(B) = 0; scores = X B.
            Dense items × items inverse: fine up to ml-1m (3.7k movies), not ml-25m.
EASE by time EASE whose input weighs each rated movie by closeness in time to the query
            (the information the two-tower query tower's time pools use).
"""

from typing import Sequence, Tuple

import numpy as np

from components.retrieval_evaluator.eval_set import EvalSet


def interactions(eval_set: EvalSet) -> np.ndarray:
  """Binary users × catalogue matrix of training ratings."""
  x = np.zeros((len(eval_set.user_ids), len(eval_set.catalogue_ids)), np.float32)
  for user, items in enumerate(eval_set.seen):
    x[user, items] = 1.0
  return x


def popularity_scores(eval_set: EvalSet) -> np.ndarray:
  counts = interactions(eval_set).sum(axis=0)
  return np.broadcast_to(counts, (len(eval_set.user_ids), len(counts)))


def ease_scores(eval_set: EvalSet, l2: float = 500.0) -> np.ndarray:
  return (interactions(eval_set) @ ease_weights(eval_set, l2)).astype(np.float32)


def ease_weights(eval_set: EvalSet, l2: float = 500.0) -> np.ndarray:
  """EASE's item-item matrix B (items × items, zero diagonal)."""
  x = interactions(eval_set).astype(np.float64)
  gram = x.T @ x
  gram[np.diag_indices_from(gram)] += l2
  p = np.linalg.inv(gram)
  b = -p / np.diag(p)
  b[np.diag_indices_from(b)] = 0.0
  return b


def ease_by_time(b: np.ndarray, history: Sequence[Tuple[np.ndarray, np.ndarray]],
                 users: np.ndarray, query_days: np.ndarray, tau_days: float = 0.05,
                 boost: float = 5.0) -> np.ndarray:
  """EASE scores with the time information the two-tower query tower sees: each of the
  user's training movies weighs 1 + boost·exp(-|t_query - t_rated| / τ) instead of 1.
  history: user index → (catalogue indices, days rated); one row per (user, query day)."""
  out = np.zeros((len(users), b.shape[0]), np.float32)
  for i, (user, day) in enumerate(zip(users, query_days)):
    items, days = history[user]
    weights = np.zeros(b.shape[0])
    np.maximum.at(weights, items, 1.0 + boost * np.exp(-np.abs(days - day) / tau_days))
    out[i] = weights @ b
  return out
