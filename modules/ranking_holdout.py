"""Which training ratings the first stage leaves to a second stage.

A second stage that re-orders the retrieval model's candidates must learn from
candidates retrieved out of sample, as they are at serving time; candidates of ratings
the retrieval model trained on are easier than any it will see live (the positive was a
training target). So each user's newest training ratings can be held out of retrieval
training (RetrievalHParams.holdout_per_user) for that purpose; bench/ranking_quality.py
trains its re-ranker on them.
"""

import numpy as np

NEVER = np.iinfo(np.int64).max


def holdout_cutoffs(users: np.ndarray, seconds: np.ndarray, per_user: int,
                    num_users: int) -> np.ndarray:
  """[num_users] unix seconds: a user's training ratings made at or after theirs are held
  out of the first stage (the retrieval and rating models) for the ranking stage to learn
  from, as out-of-sample candidates (NEVER: none).

  The cutoff is the time of the user's `per_user`-th newest rating (ties at that second
  held out too; by time alone, so that raw and vocabulary ids give the same rows), but
  never more than half of a user's ratings (rounded down) are held out: the first stage
  keeps enough of each user to learn them. `users`: integer ids in [0, num_users).
  """
  users, seconds = np.asarray(users, np.int64), np.asarray(seconds, np.int64)
  cutoff = np.full(num_users, NEVER, np.int64)
  if per_user <= 0 or not len(users):
    return cutoff
  order = np.lexsort((-seconds, users))  # by user, newest first
  counts = np.bincount(users, minlength=num_users)
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  hold = np.minimum(per_user, counts // 2)
  has = hold > 0
  cutoff[has] = seconds[order[starts[has] + hold[has] - 1]]
  return cutoff


def holdout_mask(users: np.ndarray, seconds: np.ndarray, per_user: int,
                 num_users: int) -> np.ndarray:
  """True for the held-out ratings (see holdout_cutoffs)."""
  cutoff = holdout_cutoffs(users, seconds, per_user, num_users)
  return np.asarray(seconds, np.int64) >= cutoff[np.asarray(users, np.int64)]
