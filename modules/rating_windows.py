"""Retrieval training fed by user rating sequences: every position of a window in one pass.

The per-example route gathers up to `history_max` earlier movies for every rating, so a
batch of 1,024 ratings embeds and pools ~200,000 history entries (the Trainer's cost grew
with history length × ratings). Here each user's time-ordered training ratings are cut
into windows of `window_length` consecutive ratings; a window's movies and the
`history_max` ratings before it (its context) are embedded once, and each position pools
the context through a causal mask, as sequential recommenders train every position of a
sequence at once. Each epoch still visits every training rating once, as a positive.

The mask reproduces modules/user_history.HistoryTable.lookup exactly: position i sees
the user's ratings made strictly before its second, the newest `history_max` of them,
ties at the boundary second broken by the smaller movie id (the table's newest-first
order). Rows are sorted by (user, second, movie id descending), so that set is always a
contiguous run of rows [history_start, history_end) just before the rating's second.
"""

import dataclasses
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from modules import movie_table
from modules import transformed_data

# Keys of a window batch (beside the per-position transformed features).
CONTEXT_IDS = "window_context_ids"  # [windows, context] movie ids, 0-padded
CONTEXT_SECONDS = "window_context_seconds"  # [windows, context] when each was rated
POSITION_SECONDS = "window_position_seconds"  # [windows, positions] each query's time
MASK = "window_mask"  # [windows, positions, context] bool: what each position may see
VALID = "window_valid"  # [windows, positions] bool: positions that exist (not padding)
WINDOW_OF = "window_of"  # [ratings] which window of the batch each rating belongs to


@dataclasses.dataclass
class Windows:
  """The training ratings sorted by user and time, and the windows over them."""
  columns: Dict[str, np.ndarray]  # dense transformed features by row, sorted
  history_start: np.ndarray  # [rows] first row a rating's history may read
  history_end: np.ndarray  # [rows] one past its last (the first row of its second)
  starts: np.ndarray  # [windows] first row of each window
  ends: np.ndarray  # [windows] one past its last row

  @property
  def num_ratings(self) -> int:
    return int((self.ends - self.starts).sum())


def arrange(columns: Dict[str, np.ndarray], user_key: str, movie_key: str, seconds_key: str,
            history_max: int, window_length: int,
            cutoffs: Optional[np.ndarray] = None) -> Windows:
  """Sorts `columns` (one array per dense feature, one row per rating) and cuts each
  user's ratings before their cutoff (unix seconds by user id; None: all) into windows."""
  users, movies, seconds = (np.asarray(columns[k], np.int64)
                            for k in (user_key, movie_key, seconds_key))
  order = np.lexsort((-movies, seconds, users))
  columns = {name: np.asarray(values)[order] for name, values in columns.items()}
  users, seconds = users[order], seconds[order]
  n = len(users)
  index = np.arange(n, dtype=np.int64)
  if not n:
    return Windows(columns, index, index, index, index)
  new_user = np.r_[True, users[1:] != users[:-1]]
  new_second = new_user | np.r_[True, seconds[1:] != seconds[:-1]]
  user_start = np.maximum.accumulate(np.where(new_user, index, 0))
  history_end = np.maximum.accumulate(np.where(new_second, index, 0))
  history_start = np.maximum(user_start, history_end - history_max)

  # A cutoff is a time, so each user's trainable rows are a prefix of their rows; cut
  # that prefix into windows of window_length consecutive rows.
  trainable = np.ones(n, bool) if cutoffs is None else seconds < cutoffs[users]
  first_rows = index[new_user]
  user_of_row = np.cumsum(new_user) - 1
  trainable_end = (first_rows + np.add.reduceat(trainable.astype(np.int64), first_rows))
  starts = index[trainable & ((index - user_start) % window_length == 0)]
  ends = np.minimum(starts + window_length, trainable_end[user_of_row[starts]])
  return Windows(columns, history_start, history_end, starts, ends)


def load(train_files, feature_spec, user_key: str, movie_key: str, seconds_key: str,
         history_max: int, window_length: int, cutoffs=None) -> Windows:
  """`arrange` over every dense transformed feature of the training split."""
  dense = [name for name, spec in feature_spec.items()
           if isinstance(spec, tf.io.FixedLenFeature)]
  return arrange(transformed_data.columns(train_files, feature_spec, dense), user_key,
                 movie_key, seconds_key, history_max, window_length, cutoffs)


class WindowBatches(tf.Module):
  """tf.data batches of whole windows: per-position features (query features from the
  ratings, candidate features from the movie table) plus the context and causal mask."""

  def __init__(self, windows: Windows, movies: movie_table.MovieTable, movie_key: str,
               seconds_key: str):
    super().__init__()
    self.movie_key, self.seconds_key = movie_key, seconds_key
    self.columns = {name: tf.Variable(values, trainable=False)
                    for name, values in windows.columns.items()}
    self.history_start = tf.Variable(windows.history_start, trainable=False)
    self.history_end = tf.Variable(windows.history_end, trainable=False)
    self.starts, self.ends = windows.starts, windows.ends
    self.movies = movies
    # A movie id's row in the movie table.
    ids = movies.dense[movie_key].numpy().reshape(-1)
    lookup = np.zeros(int(ids.max()) + 1 if len(ids) else 1, np.int64)
    lookup[ids] = np.arange(len(ids))
    self.movie_row = tf.Variable(lookup, trainable=False)

  def windows_per_batch(self, batch_size: int) -> int:
    """Windows whose ratings add up to about `batch_size` on average."""
    mean = float(np.mean(self.ends - self.starts)) if len(self.starts) else 1.0
    return max(1, int(round(batch_size / mean)))

  def dataset(self, batch_size: int, seed: int) -> tf.data.Dataset:
    bounds = np.stack([self.starts, self.ends], axis=1).astype(np.int64)
    return (tf.data.Dataset.from_tensor_slices(bounds)
            .shuffle(len(bounds), seed=seed, reshuffle_each_iteration=True)
            .batch(self.windows_per_batch(batch_size))
            .map(self.assemble, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))

  def assemble(self, bounds):
    """The batch of the windows [start, end) in `bounds` [windows, 2]."""
    starts, ends = bounds[:, 0], bounds[:, 1]
    positions = tf.ragged.range(starts, ends)  # [windows, None] rows
    rows = positions.flat_values
    context_start = tf.gather(self.history_start, starts)
    context = tf.ragged.range(context_start, ends).to_tensor(-1)  # [windows, context]
    present = context >= 0
    context_rows = tf.maximum(context, 0)
    padded = positions.to_tensor(-1)  # [windows, positions]
    valid = padded >= 0
    padded_rows = tf.maximum(padded, 0)
    first = tf.gather(self.history_start, padded_rows)[:, :, None]
    last = tf.gather(self.history_end, padded_rows)[:, :, None]
    mask = ((context[:, None, :] >= first) & (context[:, None, :] < last)
            & valid[:, :, None] & present[:, None, :])
    out = {name: tf.gather(column, rows)[:, None] for name, column in self.columns.items()}
    movie_rows = tf.gather(self.movie_row, tf.reshape(out[self.movie_key], [-1]))
    for name, column in self.movies.dense.items():
      if name not in out:
        out[name] = tf.gather(column, movie_rows)
    for name, (values, splits) in self.movies.ragged.items():
      ragged = tf.RaggedTensor.from_row_splits(values, splits, validate=False)
      out[name] = tf.gather(ragged, movie_rows).to_sparse()
    seconds = self.columns[self.seconds_key]
    out.update({
        CONTEXT_IDS: tf.where(present, tf.gather(self.columns[self.movie_key], context_rows), 0),
        CONTEXT_SECONDS: tf.where(present, tf.gather(seconds, context_rows), 0),
        POSITION_SECONDS: tf.gather(seconds, padded_rows),
        MASK: mask,
        VALID: valid,
        WINDOW_OF: positions.value_rowids(),
    })
    return out
