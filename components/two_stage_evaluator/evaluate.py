"""Two-stage metrics: retrieve → leave out what the user had rated → order, on the eval rows.

For every eval rating, the retrieval towers' N best movies (scored exactly over the
whole catalogue, the user's movies rated by then left out as the RetrievalEvaluator
leaves them out) form its candidate list, ordered:

  retrieval_order  the first stage alone (the list as retrieved)
  two_stage        by ranking score: the sequence scorer's score blended with the
                   retrieval score (modules/sequence_scorer.blend), as serving orders it
  sequence_scorer  by the scorer's score alone (reported, not gated: what each half of
                   the blend brings)
  baseline_two_stage  the same with the last blessed ranker's scorer, when given

and each order's HR@10 and NDCG@10 is the eval rating's movie's place in it (a list
without it: a miss for both), computed by TFMA with the eval rating as the query
(tfma_lists.py). Same rows, same candidates: the difference is the second stage's
alone. The ratio's 95% interval is a paired bootstrap over the rows, computed here.
"""

import dataclasses
from typing import Dict, Optional, Tuple

import numpy as np

from components.retrieval_evaluator.eval_set import EvalSet
from modules import sequence_scorer

K = 10
METRICS = ("hr_at_10", "ndcg_at_10")
RETRIEVAL_ORDER, TWO_STAGE, BASELINE_TWO_STAGE = "retrieval_order", "two_stage", \
    "baseline_two_stage"
SCORER_ONLY = "sequence_scorer"  # the scorer's score alone: what the blend adds to it
# Eval ratings evaluated at most, drawn at random above it (`sample`): TFMA's memory grows
# with the lists' examples. 5,000 rows put a standard error of about 0.003 on NDCG@10,
# and the gate compares two orders of the same rows.
MAX_EVAL_RATINGS = 5_000
_CHUNK = 1024
_RESAMPLES = 1000


def sample_rows(count: int, max_rows: int, seed: int = 0) -> np.ndarray:
  """At most `max_rows` of `count` rows, drawn at random, in their order."""
  if count <= max_rows:
    return np.arange(count)
  return np.sort(np.random.default_rng(seed).choice(count, max_rows, replace=False))


def sample(data: EvalSet, max_rows: int) -> EvalSet:
  """`data` with at most `max_rows` of its eval ratings (sample_rows): TFMA holds about
  13 KB per candidate example in memory (10.7 GB for 28,600 eval ratings' lists,
  BENCHMARKS.md "The second stage at 1M ratings")."""
  if len(data.eval_items) <= max_rows:
    return data
  return data.with_eval_rows(sample_rows(len(data.eval_items), max_rows))


def candidate_lists(model_pair, data: EvalSet, n: int) -> Tuple[np.ndarray, np.ndarray]:
  """(candidates [rows, n] catalogue indices, best first; their retrieval scores)."""
  movies, ids = model_pair.embed_candidate_examples(data.catalogue_serialized)
  assert list(ids) == list(data.catalogue_ids), "candidate model reordered the catalogue"
  queries = model_pair.embed_query_examples(data.eval_serialized)
  n = min(n, len(ids))
  tops, scores = [], []
  for start in range(0, len(queries), _CHUNK):
    rows = np.arange(start, min(start + _CHUNK, len(queries)))
    chunk = queries[rows] @ movies.T
    for i, rated in enumerate(data.rated_by_then(rows)):
      chunk[i, rated[rated != data.eval_items[rows[i]]]] = -np.inf
    top = np.argsort(-chunk, axis=1, kind="stable")[:, :n]
    tops.append(top)
    scores.append(np.take_along_axis(chunk, top, 1))
  if not tops:
    return np.zeros((0, n), np.int64), np.zeros((0, n), np.float32)
  return np.concatenate(tops), np.concatenate(scores)


def scorer_scores(scorer: sequence_scorer.LoadedScorer, data: EvalSet,
                  candidates: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(scores, known) [rows, n] of the sequence scorer, each row's query reading its
  user's training ratings made strictly before it, newest first."""
  scores, known = [], []
  for start in range(0, len(candidates), _CHUNK):
    rows = np.arange(start, min(start + _CHUNK, len(candidates)))
    histories, rated_at = [], []
    for row, seen in zip(rows, data.seen_before(rows)):
      seconds = data.user_train_seconds[data.eval_users[row]][:len(seen)]
      histories.append(list(data.catalogue_ids[seen[::-1]]))
      rated_at.append([int(t) for t in seconds[::-1]])
    s, k = scorer.score_many(histories, rated_at, [int(t) for t in data.eval_seconds[rows]],
                             data.catalogue_ids[candidates[rows]].tolist())
    scores.append(s)
    known.append(k)
  return np.concatenate(scores), np.concatenate(known)


def row_rates(order: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Per row: (hit@K, NDCG@K) of a list put in `order` (column indices, best first);
  labels [rows, n] True at the eval rating's movie."""
  ranked = np.take_along_axis(labels, order, 1)[:, :K]
  hit = ranked.any(1)
  rank = np.argmax(ranked, 1)
  return hit.astype(np.float64), np.where(hit, 1 / np.log2(rank + 2), 0.0)


def paired_ratio_interval(new: np.ndarray, old: np.ndarray, draws: int = _RESAMPLES,
                          seed: int = 0):
  """95% paired-bootstrap interval of mean(new) / mean(old), per-row values of two orders
  of the same rows (the same resampled rows in both); None without rows or hits."""
  if not len(new) or old.sum() == 0:
    return None
  rng = np.random.default_rng(seed)
  picks = rng.integers(0, len(new), (draws, len(new)))
  ratios = new[picks].mean(1) / np.maximum(old[picks].mean(1), 1e-12)
  return [float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))]


@dataclasses.dataclass
class OrderedLists:
  """The eval rows' candidate lists and each order of them (RETRIEVAL_ORDER, TWO_STAGE,
  SCORER_ONLY and, given a baseline ranker, BASELINE_TWO_STAGE)."""
  labels: np.ndarray  # [rows, n]: True at the movie rated next
  orders: Dict[str, np.ndarray]  # name -> [rows, n] column indices, best first
  history_lengths: np.ndarray  # per row: the user's training ratings before it
  known: np.ndarray  # [rows, n]: candidates the scorer has an embedding for


def ordered_lists(model_pair, scorer: sequence_scorer.LoadedScorer, data: EvalSet, n: int,
                  baseline: Optional[sequence_scorer.LoadedScorer] = None) -> OrderedLists:
  """Each eval row's N retrieved candidates, as retrieved and by ranking score (and by the
  baseline ranker's, when given)."""
  candidates, retrieval = candidate_lists(model_pair, data, n)

  def ranking_order(with_scorer):
    scores, known = scorer_scores(with_scorer, data, candidates)
    return np.argsort(-sequence_scorer.blend(scores, retrieval, known), axis=1,
                      kind="stable"), scores, known

  orders = {RETRIEVAL_ORDER: np.broadcast_to(np.arange(candidates.shape[1]), candidates.shape)}
  orders[TWO_STAGE], scores, known = ranking_order(scorer)
  orders[SCORER_ONLY] = scorer_only_order(scores, known)
  if baseline is not None:
    orders[BASELINE_TWO_STAGE] = ranking_order(baseline)[0]
  history = np.array([len(seen) for seen in data.seen_before(np.arange(len(candidates)))],
                     np.int64)
  return OrderedLists(candidates == data.eval_items[:, None], orders, history, known)


def scorer_only_order(scores: np.ndarray, known: np.ndarray) -> np.ndarray:
  """The list by the sequence scorer's score alone; candidates it does not know last, as
  retrieved."""
  return np.argsort(-np.where(known, scores, -np.inf), axis=1, kind="stable")


def summary(lists: OrderedLists, overall: Dict[str, float],
            eval_ratings_available: Optional[int] = None) -> Dict[str, float]:
  """Flat metrics: each order's HR@10 and NDCG@10 (`overall`: TFMA's, tfma_lists.load's
  "" slice), two_stage / retrieval_order ratios with their 95% paired-bootstrap interval
  (per-row, here), and the lists' sizes (`eval_ratings`: the rows evaluated, of
  `eval_ratings_available`)."""
  labels = lists.labels
  out = {"eval_ratings": int(labels.shape[0]),
         "eval_ratings_available": int(labels.shape[0] if eval_ratings_available is None
                                       else eval_ratings_available),
         "candidates": int(labels.shape[1]),
         "candidates_unknown_to_scorer": (float(1 - lists.known.mean())
                                          if lists.known.size else 0.0),
         "candidate_recall": float(labels.any(1).mean()) if len(labels) else 0.0}
  for order in lists.orders:
    for metric in METRICS:
      out[f"{order}_{metric}"] = float(overall.get(f"{order}_{metric}", 0.0))
  for metric, old, new in zip(METRICS, row_rates(lists.orders[RETRIEVAL_ORDER], labels),
                              row_rates(lists.orders[TWO_STAGE], labels)):
    out[f"two_stage_{metric}_ratio"] = (out[f"two_stage_{metric}"] /
                                        max(out[f"retrieval_order_{metric}"], 1e-12))
    interval = paired_ratio_interval(new, old)
    if interval:
      out[f"two_stage_{metric}_ratio_low"], out[f"two_stage_{metric}_ratio_high"] = interval
  return out
