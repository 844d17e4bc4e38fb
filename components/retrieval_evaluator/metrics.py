"""Retrieval metrics over the whole catalogue, by exact (brute-force) scoring. numpy only.

Every eval rating (user, movie, time) is one query, scored against every movie:

* `hr_at_{k}`: HitRate@k, the next-item protocol's metric (SASRec, BERT4Rec): is the
  rated movie among the k best after removing the movies the user had rated by then
  (before it, or in the same second: EvalSet.rated_by_then; a product does not show them
  again; movies rated later are not known then and stay)?
* `ndcg_at_10`: NDCG@10 of the same ranking (one relevant movie: 1 / log2(rank + 2)).
* `top_{k}`: the TFRS tutorials' factorized top-k accuracy, nothing removed.

Ties count as broken at random: a movie with g movies scoring higher and t others scoring
the same takes each rank g..g+t with equal probability (a constant scorer gets
k / catalogue size, not 1).
"""

from typing import Callable, Dict, List, Sequence

import numpy as np

KS = (1, 5, 10, 50, 100)
NDCG_K = 10
_CHUNK = 2048


def _mask(scores: np.ndarray, remove: Sequence[np.ndarray], keep: np.ndarray) -> None:
  """Sets each row's `remove` movies to -inf, except the row's own movie (in place)."""
  lengths = [len(r) for r in remove]
  if not sum(lengths):
    return
  rows = np.repeat(np.arange(len(remove)), lengths)
  cols = np.concatenate(remove).astype(np.int64)
  own = cols == keep[rows]
  scores[rows[~own], cols[~own]] = -np.inf


def _above_and_tied(scores: np.ndarray, positive: np.ndarray):
  """Per row: how many movies score above the positive, and how many others tie with it."""
  return (scores > positive).sum(axis=1), (scores == positive).sum(axis=1) - 1


def _expected_hits(above: np.ndarray, tied: np.ndarray, k: int) -> np.ndarray:
  return np.clip((k - above) / (tied + 1.0), 0.0, 1.0)


def _expected_ndcg(above: np.ndarray, tied: np.ndarray, k: int) -> np.ndarray:
  """E[1/log2(rank + 2) · 1(rank < k)] with rank uniform on above..above+tied."""
  discounts = np.concatenate([1.0 / np.log2(np.arange(2, k + 2)), [0.0]])
  cumulative = np.concatenate([[0.0], np.cumsum(discounts)])  # sum of the first i ranks
  low = np.minimum(above, k)
  high = np.minimum(above + tied + 1, k)
  return (cumulative[high] - cumulative[low]) / (tied + 1.0)


def next_item(score_rows: Callable[[np.ndarray], np.ndarray], items: np.ndarray,
              rated: Callable[[np.ndarray], List[np.ndarray]],
              ks: Sequence[int] = KS) -> Dict[str, float]:
  """`hr_at_{k}`, `ndcg_at_10` and `top_{k}` of eval rows (catalogue index of each row's
  movie). score_rows(rows) -> [len(rows), catalogue size] scores; rated(rows) -> per
  row, the catalogue indices to remove (the user's movies rated by that row's time)."""
  sums = {f"top_{k}": 0.0 for k in ks}
  sums.update({f"hr_at_{k}": 0.0 for k in ks})
  sums[f"ndcg_at_{NDCG_K}"] = 0.0
  for start in range(0, len(items), _CHUNK):
    idx = np.arange(start, min(start + _CHUNK, len(items)))
    scores = np.array(score_rows(idx), dtype=np.float32)
    positive = scores[np.arange(len(idx)), items[idx]][:, None]
    above, tied = _above_and_tied(scores, positive)
    for k in ks:
      sums[f"top_{k}"] += _expected_hits(above, tied, k).sum()
    _mask(scores, rated(idx), items[idx])
    above, tied = _above_and_tied(scores, positive)
    for k in ks:
      sums[f"hr_at_{k}"] += _expected_hits(above, tied, k).sum()
    sums[f"ndcg_at_{NDCG_K}"] += _expected_ndcg(above, tied, NDCG_K).sum()
  n = max(len(items), 1)
  return {name: float(total / n) for name, total in sums.items()}
