"""The first stage's holdout for a second stage: which ratings, and that training skips them."""
import os

import numpy as np
import tensorflow as tf

from modules import ranking_holdout, transformed_data


def brute_force_holdout(users, seconds, per_user):
  """Per user, independently: the newest min(per_user, n // 2) ratings by time, plus any
  rating tied in time with the oldest of those."""
  held = np.zeros(len(users), bool)
  for user in set(users.tolist()):
    rows = np.flatnonzero(users == user)
    hold = min(per_user, len(rows) // 2)
    if hold == 0:
      continue
    newest_first = sorted(seconds[rows], reverse=True)
    held[rows] = seconds[rows] >= newest_first[hold - 1]
  return held


def test_holdout_is_each_users_newest_ratings_ties_included_never_over_half():
  rng = np.random.default_rng(3)
  users = rng.integers(0, 40, size=2000)
  seconds = rng.integers(1_000, 1_200, size=2000)  # many ties within a user
  for per_user in (1, 3, 5, 100):
    got = ranking_holdout.holdout_mask(users, seconds, per_user, num_users=45)
    np.testing.assert_array_equal(got, brute_force_holdout(users, seconds, per_user))
  # A user with 3 ratings keeps 2 (at most half, rounded down, is held out); one with a
  # single rating keeps it; users without ratings get no cutoff.
  users, seconds = np.array([0, 0, 0, 1]), np.array([10, 20, 30, 5])
  np.testing.assert_array_equal(ranking_holdout.holdout_mask(users, seconds, 5, 3),
                                [False, False, True, False])
  cutoffs = ranking_holdout.holdout_cutoffs(users, seconds, 5, 3)
  assert cutoffs[0] == 30 and cutoffs[1] == cutoffs[2] == ranking_holdout.NEVER
  assert not ranking_holdout.holdout_mask(users, seconds, 0, 3).any()


def test_training_data_skips_held_out_ratings(tmp_path):
  users = np.array([0, 0, 0, 0, 1, 1, 1, 1])
  seconds = np.array([1, 2, 3, 4, 7, 8, 8, 9])
  path = os.path.join(tmp_path, "part.gz")
  with tf.io.TFRecordWriter(path, options="GZIP") as writer:
    for user, second in zip(users, seconds):
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          "u": tf.train.Feature(int64_list=tf.train.Int64List(value=[user])),
          "s": tf.train.Feature(int64_list=tf.train.Int64List(value=[second]))})
      ).SerializeToString())
  spec = {"u": tf.io.FixedLenFeature([], tf.int64), "s": tf.io.FixedLenFeature([], tf.int64)}
  cutoffs = ranking_holdout.holdout_cutoffs(users, seconds, 2, num_users=2)
  kept = transformed_data.dataset(path, spec, 100, keep=transformed_data.before_cutoffs(
      cutoffs, "u", "s"))
  batch = next(iter(kept))
  got = sorted(zip(batch["u"].numpy().tolist(), batch["s"].numpy().tolist()))
  # User 0: 4 and 3 held out. User 1: the two newest are 9 and one 8; the other 8 ties.
  assert got == [(0, 1), (0, 2), (1, 7)]
