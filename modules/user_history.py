"""User histories for the query tower: each user's rated movies, as a ragged id table.

Built once per training run from the transformed training split (user and movie ids are
Transform vocabulary ids). During training, an example's own movie is left out of its
user's history (otherwise the tower could learn to echo it); at evaluation the table is
the training state; at serving the caller passes the user's rated movies.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top


def build_table(user_ids: np.ndarray, movie_ids: np.ndarray, times: np.ndarray,
                num_users: int, history_max: int):
  """(values, times, row_splits): per user id, up to `history_max` movie ids, most recent
  first, and when each was rated (`times`' units, e.g. days)."""
  order = np.lexsort((-times, user_ids))  # by user, then newest first
  users, movies, ordered_times = user_ids[order], movie_ids[order], times[order]
  counts = np.bincount(users, minlength=num_users)
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  rank = np.arange(len(users)) - starts[users]  # position within the user's list
  keep = rank < history_max
  kept_counts = np.minimum(counts, history_max)
  row_splits = np.concatenate([[0], np.cumsum(kept_counts)]).astype(np.int64)
  return (movies[keep].astype(np.int64), ordered_times[keep].astype(np.float32),
          row_splits)


class HistoryTable(tf.Module):
  """The table as non-trainable variables (saved with the model, not baked into graphs)."""

  def __init__(self, values: np.ndarray, times: np.ndarray, row_splits: np.ndarray):
    super().__init__()
    self.values = tf.Variable(values, trainable=False, dtype=tf.int64, name="history_values")
    self.times = tf.Variable(times, trainable=False, dtype=tf.float32, name="history_times")
    self.row_splits = tf.Variable(row_splits, trainable=False, dtype=tf.int64,
                                  name="history_row_splits")

  def lookup(self, user_ids):
    """(movie ids, times): ragged [batch, None] of each user id (empty beyond the table)."""
    num_rows = tf.shape(self.row_splits, out_type=tf.int64)[0] - 1
    user_ids = tf.reshape(tf.cast(user_ids, tf.int64), [-1])
    known = user_ids < num_rows
    rows = tf.where(known, user_ids, tf.zeros_like(user_ids))
    return tuple(
        _row_mask(tf.gather(tf.RaggedTensor.from_row_splits(column, self.row_splits,
                                                            validate=False), rows), known)
        for column in (self.values, self.times))


def _row_mask(rows: tf.RaggedTensor, keep_row) -> tf.RaggedTensor:
  """Empties the rows where keep_row is False."""
  lengths = rows.row_lengths()
  mask = tf.repeat(keep_row, lengths)
  return tf.RaggedTensor.from_row_lengths(
      tf.boolean_mask(rows.values, mask), tf.where(keep_row, lengths, tf.zeros_like(lengths)))
