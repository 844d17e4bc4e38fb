"""Non-learned retrieval baselines scored on the same EvalSet as the model.

popularity  every user gets the movies ordered by training rating count.
EASE        Steck 2019, "Embarrassingly Shallow Autoencoders": a closed-form item-item
            model B = -P / diag(P) with P = (XᵀX + λI)⁻¹ and diag(B) = 0; scores = X B.
            Dense items × items inverse: fine up to ml-1m (3.7k movies), not ml-25m.
"""

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
  x = interactions(eval_set).astype(np.float64)
  gram = x.T @ x
  gram[np.diag_indices_from(gram)] += l2
  p = np.linalg.inv(gram)
  b = -p / np.diag(p)
  b[np.diag_indices_from(b)] = 0.0
  return (x @ b).astype(np.float32)
