"""Retrieval metrics over the whole catalogue, by exact (brute-force) scoring. numpy only.

Two views of the same eval split:

* factorized top-k accuracy (the TFRS tutorials' metric): for each eval rating (user,
  movie), is the movie among the k highest-scoring movies of the catalogue for that
  rating's query? `top_k` counts every movie; `top_k_unseen` first removes the movies
  the user rated in training (what a product would show). The rated movie itself is
  never removed. Ties count as broken at random: a movie with g movies scoring higher and
  t others scoring the same is a top-k hit with probability clip((k - g) / (t + 1), 0, 1)
  (a constant scorer gets k / catalogue size, not 1).
* per user: one query per user, the top 10 unseen movies against all the user's eval
  movies: Recall@10 = hits / |eval movies| and NDCG@10 (binary gains, ideal DCG over
  min(10, |eval movies|) hits), averaged over users.
"""

from typing import Callable, Dict, List, Sequence

import numpy as np

KS = (1, 5, 10, 50, 100)
PER_USER_K = 10
_CHUNK = 2048


def _mask_seen(scores: np.ndarray, users: np.ndarray, seen: Sequence[np.ndarray],
               keep: np.ndarray = None) -> None:
  """Sets the scores of each row's user's training movies to -inf (in place)."""
  rows = [np.full(len(seen[u]), r) for r, u in enumerate(users)]
  if not rows:
    return
  cols = [seen[u] for u in users]
  rows, cols = np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)
  if keep is not None:  # the rated movie itself stays rankable
    keep_mask = cols != keep[rows]
    rows, cols = rows[keep_mask], cols[keep_mask]
  scores[rows, cols] = -np.inf


def factorized_top_k(score_rows: Callable[[np.ndarray], np.ndarray], items: np.ndarray,
                     users: np.ndarray, seen: Sequence[np.ndarray],
                     ks: Sequence[int] = KS) -> Dict[str, float]:
  """`top_{k}` and `top_{k}_unseen` accuracy of eval rows (user index, catalogue index).

  score_rows(row_indices) -> [len(row_indices), catalogue size] scores of those rows.
  """
  hits = {f"top_{k}": 0 for k in ks}
  hits.update({f"top_{k}_unseen": 0 for k in ks})
  for start in range(0, len(items), _CHUNK):
    idx = np.arange(start, min(start + _CHUNK, len(items)))
    scores = np.asarray(score_rows(idx), dtype=np.float32)
    positive = scores[np.arange(len(idx)), items[idx]][:, None]
    above_all, tied_all = _above_and_tied(scores, positive)
    _mask_seen(scores, users[idx], seen, keep=items[idx])
    above_unseen, tied_unseen = _above_and_tied(scores, positive)
    for k in ks:
      hits[f"top_{k}"] += _expected_hits(above_all, tied_all, k)
      hits[f"top_{k}_unseen"] += _expected_hits(above_unseen, tied_unseen, k)
  n = max(len(items), 1)
  return {name: count / n for name, count in hits.items()}


def _above_and_tied(scores: np.ndarray, positive: np.ndarray):
  """Per row: how many movies score above the positive, and how many others tie with it."""
  return (scores > positive).sum(axis=1), (scores == positive).sum(axis=1) - 1


def _expected_hits(above: np.ndarray, tied: np.ndarray, k: int) -> float:
  return float(np.clip((k - above) / (tied + 1.0), 0.0, 1.0).sum())


def per_user(score_users: Callable[[np.ndarray], np.ndarray], eval_items: List[np.ndarray],
             seen: Sequence[np.ndarray], k: int = PER_USER_K) -> Dict[str, float]:
  """Mean Recall@k and NDCG@k over users with eval movies.

  score_users(user_indices) -> [len(user_indices), catalogue size] scores.
  eval_items[u]: catalogue indices of user u's eval movies (may be empty).
  """
  users = np.array([u for u, items in enumerate(eval_items) if len(items)], dtype=np.int64)
  discounts = 1.0 / np.log2(np.arange(2, k + 2))
  recall_sum = ndcg_sum = 0.0
  for start in range(0, len(users), _CHUNK):
    chunk = users[start:start + _CHUNK]
    scores = np.asarray(score_users(chunk), dtype=np.float32)
    _mask_seen(scores, chunk, seen)
    top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    for row, user in enumerate(chunk):
      relevant = eval_items[user]
      hit = np.isin(top[row], relevant)
      recall_sum += hit.sum() / len(relevant)
      ideal = discounts[:min(k, len(relevant))].sum()
      ndcg_sum += (discounts[:len(hit)] * hit).sum() / ideal
  n = max(len(users), 1)
  return {f"recall_at_{k}": recall_sum / n, f"ndcg_at_{k}": ndcg_sum / n,
          "users_evaluated": int(len(users))}
