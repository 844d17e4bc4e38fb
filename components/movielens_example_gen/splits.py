"""How ratings are split into train and eval: the split names and the pure per-rating rules
(no Beam, no TensorFlow, so the CLI can name the choices without loading either).

  last      each user's `eval_per_user` latest ratings are eval, everything earlier train:
            the next-item protocol of the sequential-recommendation literature (SASRec,
            BERT4Rec). The default.
  random    a seeded 80/20 of ratings (the TFRS tutorials' protocol).
  temporal  ratings before a global time cutoff train, the rest eval.
"""

import hashlib
from typing import Sequence, Tuple

from components.movielens_example_gen import layouts

SPLIT_LAST = "last"
SPLIT_RANDOM = "random"
SPLIT_TEMPORAL = "temporal"
SPLIT_METHODS = (SPLIT_LAST, SPLIT_RANDOM, SPLIT_TEMPORAL)


def random_split_is_train(rating: layouts.Rating, seed: int, train_fraction: float) -> bool:
  """Seeded, order-independent train/eval assignment of one rating.

  A keyed hash of the rating, so the same seed gives the same split on any runner and
  any number of workers (Python's `hash` is salted per process; blake2b is not).
  """
  key = f"{rating.user_id}:{rating.movie_id}:{rating.timestamp}".encode()
  digest = hashlib.blake2b(key, digest_size=8, key=str(seed).encode()).digest()
  return int.from_bytes(digest, "big") / 2.0**64 < train_fraction


def rating_order(rating: layouts.Rating) -> Tuple[int, str]:
  """A user's ratings in time order; ties at the same second broken by movie id, so the
  split does not depend on file order."""
  return rating.timestamp, rating.movie_id


def last_is_eval(rating: layouts.Rating, newest: Sequence[Tuple[int, str]],
                 eval_per_user: int) -> bool:
  """Whether `rating` is one of its user's `eval_per_user` latest, given the user's
  `eval_per_user + 1` largest rating_order keys (`newest`, largest first). A user with
  no more ratings than `eval_per_user` keeps them all in train (there would be nothing
  before the eval ratings to learn the user from)."""
  if len(newest) <= eval_per_user:
    return False
  return rating_order(rating) >= newest[eval_per_user - 1]
