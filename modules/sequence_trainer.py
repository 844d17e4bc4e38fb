"""Trains the sequence scorer (modules/sequence_scorer.py) on the training ratings.

Every training rating is a query: its history is the user's training ratings made
strictly before it (the rule of modules/user_history.py), its target the movie rated,
and the movies the user had rated by then (the same second's too, but the target) are
left out of its softmax, as the next-item evaluation leaves them out. A user's first
rating has nothing to read and is not trained on.

Each user's newest training rating is held out of training as a validation row (at most
`sequence_max_validation_queries` users', drawn at random; the others' newest ratings are
trained on), scored over the whole catalogue after every epoch; training stops
`sequence_patience` epochs after the best validation NDCG@10, and that epoch's weights
are kept. Nothing of the eval split is used.
"""

import time
from typing import Callable, Dict, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from modules import sequence_scorer
from modules import training_progress
from modules.hparams import RankingHParams

K = 10  # the validation metric's cut-off: NDCG@10, as the evaluation reports
_SCORING_BATCH = 512


class RatingLog:
  """The training ratings (vocabulary ids) sorted by user, then time, then movie: the
  histories and left-out movies of any query are read from it."""

  def __init__(self, users: np.ndarray, movies: np.ndarray, seconds: np.ndarray, pad: int):
    order = np.lexsort((movies, seconds, users))
    self.users, self.movies = users[order].astype(np.int64), movies[order].astype(np.int64)
    self.seconds = seconds[order].astype(np.int64)
    self.pad = pad  # the padding id of a history (the number of movies)
    self._origin = int(self.seconds.min()) if len(self.seconds) else 0
    self._span = int(self.seconds.max()) - self._origin + 2 if len(self.seconds) else 2
    self._keys = self._key(self.users, self.seconds)

  def _key(self, users, seconds):
    """One sortable int64 per (user, second): the log's order, for searchsorted."""
    seconds = np.clip(np.asarray(seconds, np.int64) - self._origin, -1, self._span - 1)
    return np.asarray(users, np.int64) * (self._span + 1) + seconds + 1

  def queries(self, users, movies, seconds) -> "Queries":
    return Queries(self, users, movies, seconds)


class Queries:
  """Next-item queries (user, target movie, time) over a RatingLog."""

  def __init__(self, log: RatingLog, users, movies, seconds):
    self.log = log
    self.targets = np.asarray(movies, np.int64)
    self.seconds = np.asarray(seconds, np.int64)
    users = np.asarray(users, np.int64)
    self.first = np.searchsorted(log.users, users, "left")  # the user's first rating
    keys = log._key(users, self.seconds)  # pylint: disable=protected-access
    self.before = np.searchsorted(log._keys, keys, "left")  # pylint: disable=protected-access
    self.until = np.searchsorted(log._keys, keys, "right")  # pylint: disable=protected-access

  def __len__(self):
    return len(self.targets)

  def with_history(self) -> "Queries":
    keep = self.before > self.first
    out = object.__new__(Queries)
    out.log = self.log
    for name in ("targets", "seconds", "first", "before", "until"):
      setattr(out, name, getattr(self, name)[keep])
    return out

  def histories(self, rows, length: int) -> Tuple[np.ndarray, np.ndarray]:
    """(ids [b, length] newest first, padded; gaps [b, length] log-days to the query)."""
    positions = self.before[rows, None] - 1 - np.arange(length)[None]
    valid = positions >= self.first[rows, None]
    positions = np.where(valid, positions, 0)
    ids = np.where(valid, self.log.movies[positions], self.log.pad)
    gaps = sequence_scorer.log_day_gaps(self.seconds[rows, None], self.log.seconds[positions])
    return ids.astype(np.int32), np.where(valid, gaps, 0).astype(np.float32)

  def left_out(self, rows) -> np.ndarray:
    """[n, 2] (position in `rows`, movie) pairs: what each query's user had rated by its
    time (that second included), its target excepted."""
    counts = self.until[rows] - self.first[rows]
    owner = np.repeat(np.arange(len(rows)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    movies = self.log.movies[np.repeat(self.first[rows], counts) + offsets]
    keep = movies != self.targets[rows][owner]
    return np.stack([owner[keep], movies[keep]], 1).astype(np.int32)


def newest_per_user(users: np.ndarray, seconds: np.ndarray) -> np.ndarray:
  """[rows] True at each user's newest rating (one per user; ties: the later row)."""
  order = np.lexsort((np.arange(len(users)), seconds, users))
  newest = np.zeros(len(users), bool)
  newest[order[np.r_[users[order][1:] != users[order][:-1], True]]] = True
  return newest


def validation_rows(users: np.ndarray, seconds: np.ndarray, limit: int,
                    rng: np.random.Generator) -> np.ndarray:
  """[rows] True at the newest rating of at most `limit` users, drawn at random."""
  newest = newest_per_user(users, seconds)
  rows = np.flatnonzero(newest)
  if len(rows) > limit:
    newest[rng.choice(rows, len(rows) - limit, replace=False)] = False
  return newest


def full_catalogue_rates(logits: np.ndarray, queries: Queries, rows) -> Tuple[float, float]:
  """(hits, summed NDCG) at K of rows scored over the whole catalogue, their left-out
  movies removed."""
  logits = np.array(logits, copy=True)
  left_out = queries.left_out(rows)
  logits[left_out[:, 0], left_out[:, 1]] = -np.inf
  target = logits[np.arange(len(rows)), queries.targets[rows]]
  rank = (logits > target[:, None]).sum(1)
  hit = rank < K
  return float(hit.sum()), float(np.where(hit, 1 / np.log2(rank + 2), 0).sum())


def _log_progress(line: str) -> None:
  logging.info("%s%s", training_progress.PREFIX, line)  # shown on the console


def train(users: np.ndarray, movies: np.ndarray, seconds: np.ndarray, num_movies: int,
          hparams: RankingHParams, progress: Callable[[str], None] = _log_progress,
          on_epoch: Optional[Callable[[int, sequence_scorer.SequenceScorer], None]] = None
          ) -> Tuple[sequence_scorer.SequenceScorer, Dict]:
  """Trains on the ratings (vocabulary ids, unix seconds); returns (scorer at the best
  validation epoch, summary). `on_epoch(epoch, scorer)` (benchmarks) is called after
  each epoch."""
  tf.keras.utils.set_random_seed(hparams.seed)
  log = RatingLog(users, movies, seconds, pad=num_movies)
  rng = np.random.default_rng(hparams.seed)
  validation = validation_rows(users, seconds, hparams.sequence_max_validation_queries, rng)
  fit = log.queries(users[~validation], movies[~validation], seconds[~validation]).with_history()
  held_out = log.queries(users[validation], movies[validation], seconds[validation])
  model = sequence_scorer.SequenceScorer(num_movies, hparams)
  optimizer = tf.keras.optimizers.Adam(hparams.sequence_learning_rate)
  length, spec = hparams.sequence_length, tf.TensorSpec
  # No AutoGraph: nothing here branches on a tensor, and converting every Keras layer's
  # code took about 15 of the first step's 20 s.

  @tf.function(autograph=False, input_signature=[
      spec([None, length], tf.int32), spec([None, length], tf.float32),
      spec([None], tf.int32), spec([None, 2], tf.int32)])
  def step(history, gaps, targets, left_out):
    with tf.GradientTape() as tape:
      logits = model((history, gaps), training=True)
      logits -= 1e9 * tf.minimum(tf.scatter_nd(
          left_out, tf.ones(tf.shape(left_out)[:1]), tf.shape(logits)), 1.0)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  @tf.function(autograph=False, input_signature=[spec([None, length], tf.int32),
                                                 spec([None, length], tf.float32)])
  def logits_of(history, gaps):
    return model((history, gaps), training=False)

  def validate() -> Tuple[float, float]:
    hits = gains = 0.0
    for start in range(0, len(held_out), _SCORING_BATCH):
      rows = np.arange(start, min(start + _SCORING_BATCH, len(held_out)))
      h, g = full_catalogue_rates(logits_of(*held_out.histories(rows, length)).numpy(),
                                  held_out, rows)
      hits, gains = hits + h, gains + g
    return hits / max(len(held_out), 1), gains / max(len(held_out), 1)

  per_epoch = min(len(fit), hparams.sequence_max_queries_per_epoch)
  started = time.monotonic()
  by_epoch, best = [], (-1.0, 0, None)
  for epoch in range(1, hparams.sequence_max_epochs + 1):
    losses = []
    order = rng.permutation(len(fit))[:per_epoch]
    for start in range(0, len(order), hparams.sequence_batch_size):
      rows = order[start:start + hparams.sequence_batch_size]
      losses.append(float(step(*fit.histories(rows, length), fit.targets[rows].astype(np.int32),
                               fit.left_out(rows))))
    hr, ndcg = validate()
    by_epoch.append({"epoch": epoch, "loss": float(np.mean(losses)) if losses else None,
                     "validation_hr_at_10": hr, "validation_ndcg_at_10": ndcg})
    progress(f"RankingTrainer sequence scorer epoch {epoch}/{hparams.sequence_max_epochs} "
             f"(stops {hparams.sequence_patience} after the best), validation HR@10 "
             f"{hr:.4f} NDCG@10 {ndcg:.4f}, "
             f"{training_progress.duration(time.monotonic() - started)}")
    if on_epoch is not None:
      on_epoch(epoch, model)
    if ndcg > best[0]:
      best = (ndcg, epoch, [w.copy() for w in model.get_weights()])
    elif epoch - best[1] >= hparams.sequence_patience:
      break
  if best[2] is not None:
    model.set_weights(best[2])
  summary = {
      "train_queries": len(fit), "validation_queries": len(held_out),
      "queries_per_epoch": per_epoch,
      "best_epoch": best[1], "epochs_run": len(by_epoch),
      "train_seconds": round(time.monotonic() - started, 2), "by_epoch": by_epoch,
  }
  return model, summary
