"""User histories for the query tower: each user's training ratings, as a ragged id table.

Built once per training run from the transformed training split (user and movie ids are
Transform vocabulary ids). Causality is the table's invariant: `lookup` returns, for an
example at time t, only the user's ratings made strictly before t (a rating in the same
second is not history: nothing orders two ratings logged in one second, and the
example's own rating is excluded by the same rule). Training examples, the evaluation
signature and the IndexBuilder's queries all look histories up this way; at serving the
caller passes the user's rated movies (serving/retriever.py, which applies the same
"strictly before" rule to an `as_of` time).
"""



import numpy as np
import tensorflow as tf


def build_table(user_ids: np.ndarray, movie_ids: np.ndarray, seconds: np.ndarray,
                num_users: int):
  """(values, seconds, row_splits): per user id, every rating, newest first (ties by
  movie id, so the table does not depend on file order), and when each was made."""
  order = np.lexsort((movie_ids, -seconds, user_ids))  # by user, then newest first
  counts = np.bincount(user_ids, minlength=num_users)
  row_splits = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
  return (movie_ids[order].astype(np.int64), seconds[order].astype(np.int64), row_splits)


class HistoryTable(tf.Module):
  """The table as non-trainable variables (saved with the model, not baked into graphs)."""

  def __init__(self, values: np.ndarray, seconds: np.ndarray, row_splits: np.ndarray):
    super().__init__()
    self.values = tf.Variable(values, trainable=False, dtype=tf.int64, name="history_values")
    self.seconds = tf.Variable(seconds, trainable=False, dtype=tf.int64, name="history_seconds")
    self.row_splits = tf.Variable(row_splits, trainable=False, dtype=tf.int64,
                                  name="history_row_splits")

  def lookup(self, user_ids, before, limit: int):
    """(movie ids, seconds): ragged [batch, None]; per example, the user's ratings made
    strictly before `before` (unix seconds, one per user id), newest first, at most
    `limit` of them. Users beyond the table get an empty history."""
    num_rows = tf.shape(self.row_splits, out_type=tf.int64)[0] - 1
    user_ids = tf.reshape(tf.cast(user_ids, tf.int64), [-1])
    before = tf.reshape(tf.cast(before, tf.int64), [-1])
    known = user_ids < num_rows
    rows = tf.where(known, user_ids, tf.zeros_like(user_ids))
    ids, seconds = (tf.gather(tf.RaggedTensor.from_row_splits(column, self.row_splits,
                                                              validate=False), rows)
                    for column in (self.values, self.seconds))
    owner = seconds.value_rowids()
    keep = (seconds.flat_values < tf.gather(before, owner)) & tf.gather(known, owner)
    keep = seconds.with_flat_values(keep)
    # Rows are newest first, so what is left is each row's past; keep its newest `limit`.
    return tuple(tf.ragged.boolean_mask(column, keep)[:, :limit] for column in (ids, seconds))
