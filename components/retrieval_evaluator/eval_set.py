"""The eval split arranged for catalogue-wide scoring: indices, earlier movies, user queries.

Shared by the RetrievalEvaluator, the IndexBuilder (held-out queries) and bench/ (so the
baselines are measured on exactly the rows the model is).

Causality: what an eval rating at time t may use of the training split is what was rated
strictly before t. `seen_before` gives, per eval row, the user's training movies rated
before it (its query's history); `training_before` the whole training split's ratings
before it (popularity as it stood then).

Which movies a row's ranking leaves out is a different question: `rated_by_then` adds
the user's movies rated in the same second as the row: ratings saved together (44% of
ml-100k users' latest rating shares its second with other ratings of theirs). Those
movies are the row's fellow picks, not wrong answers; the next-item literature, sorting
each user's ratings by time, removes them with the rest of the user's earlier ratings.
No query sees them.
"""

import dataclasses
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from components import examples_io
from modules import features as F


@dataclasses.dataclass
class EvalSet:
  catalogue_ids: np.ndarray  # movie id of each catalogue index (candidate Examples order)
  catalogue_serialized: List[bytes]  # serialized movie Examples, same order
  eval_serialized: List[bytes]  # eval ratings with a movie in the catalogue
  eval_users: np.ndarray  # user index of each eval rating
  eval_items: np.ndarray  # catalogue index of each eval rating
  eval_seconds: np.ndarray  # when each eval rating was made (unix seconds)
  user_ids: List[str]  # user index -> user id
  user_train_items: List[np.ndarray]  # user index -> training catalogue indices, oldest first
  user_train_seconds: List[np.ndarray]  # user index -> when each was rated (aligned)
  train_items: np.ndarray  # every training rating's catalogue index, oldest first
  train_seconds: np.ndarray  # when each was made (aligned, ascending)
  user_query_serialized: List[bytes]  # user index -> their latest eval rating (or b"")
  dropped_eval_rows: int  # eval ratings of movies missing from the catalogue

  def with_eval_rows(self, rows: np.ndarray) -> "EvalSet":
    """The same set with only these eval ratings (the training side unchanged)."""
    return dataclasses.replace(
        self, eval_serialized=[self.eval_serialized[r] for r in rows],
        eval_users=self.eval_users[rows], eval_items=self.eval_items[rows],
        eval_seconds=self.eval_seconds[rows])

  @property
  def users_with_eval(self) -> np.ndarray:
    return np.unique(self.eval_users)

  def seen_before(self, rows: np.ndarray) -> List[np.ndarray]:
    """Per eval row: the catalogue indices its user rated in training strictly before it."""
    return self._user_train_items_until(rows, "left")

  def rated_by_then(self, rows: np.ndarray) -> List[np.ndarray]:
    """Per eval row: the catalogue indices its user rated in training at or before it
    (seen_before and the same second's ratings): what its ranking leaves out."""
    return self._user_train_items_until(rows, "right")

  def _user_train_items_until(self, rows: np.ndarray, side: str) -> List[np.ndarray]:
    return user_items_until(self.user_train_items, self.user_train_seconds,
                            self.eval_users[rows], self.eval_seconds[rows], side)

  def training_before(self, seconds: int) -> int:
    """How many training ratings (oldest first) were made strictly before `seconds`."""
    return int(np.searchsorted(self.train_seconds, seconds, side="left"))


def user_items_until(user_items: Sequence[np.ndarray], user_seconds: Sequence[np.ndarray],
                     users: np.ndarray, seconds: np.ndarray, side: str) -> List[np.ndarray]:
  """Per (user, second): the user's items (oldest first, `user_seconds` aligned and
  ascending) rated strictly before that second (side "left") or at or before it ("right")."""
  return [user_items[user][:np.searchsorted(user_seconds[user], second, side=side)]
          for user, second in zip(users, seconds)]


TRAIN_COLUMNS = {F.USER_ID: tf.string, F.MOVIE_ID: tf.string, F.TIMESTAMP: tf.int64}


def build(catalogue_serialized: Sequence[bytes], train: Dict[str, np.ndarray],
          eval_serialized: Sequence[bytes]) -> EvalSet:
  """`train`: the training split's TRAIN_COLUMNS (examples_io.split_columns)."""
  catalogue = examples_io.scalar_columns(catalogue_serialized, {F.MOVIE_ID: tf.string})
  catalogue_ids = catalogue[F.MOVIE_ID]
  item_index = {m: i for i, m in enumerate(catalogue_ids)}
  evals = examples_io.scalar_columns(eval_serialized, TRAIN_COLUMNS)

  user_ids = sorted(set(train[F.USER_ID]) | set(evals[F.USER_ID]))
  user_index = {u: i for i, u in enumerate(user_ids)}
  in_catalogue = np.array([m in item_index for m in train[F.MOVIE_ID]], dtype=bool)
  t_users = np.array([user_index[u] for u in train[F.USER_ID][in_catalogue]], dtype=np.int64)
  t_items = np.array([item_index[m] for m in train[F.MOVIE_ID][in_catalogue]], dtype=np.int64)
  t_seconds = train[F.TIMESTAMP][in_catalogue].astype(np.int64) if len(t_users) else \
      np.zeros(0, np.int64)
  by_time = np.lexsort((t_items, t_seconds))
  by_user = np.lexsort((t_items, t_seconds, t_users))
  splits = np.searchsorted(t_users[by_user], np.arange(len(user_ids) + 1))

  keep = np.array([m in item_index for m in evals[F.MOVIE_ID]], dtype=bool)
  rows = np.flatnonzero(keep)
  eval_users = np.array([user_index[evals[F.USER_ID][r]] for r in rows], dtype=np.int64)
  eval_items = np.array([item_index[evals[F.MOVIE_ID][r]] for r in rows], dtype=np.int64)
  latest: Dict[int, int] = {}
  for r, user in zip(rows, eval_users):
    if user not in latest or evals[F.TIMESTAMP][r] >= evals[F.TIMESTAMP][latest[user]]:
      latest[user] = r
  return EvalSet(
      catalogue_ids=catalogue_ids,
      catalogue_serialized=list(catalogue_serialized),
      eval_serialized=[eval_serialized[r] for r in rows],
      eval_users=eval_users, eval_items=eval_items,
      eval_seconds=evals[F.TIMESTAMP][rows].astype(np.int64) if len(rows) else
      np.zeros(0, np.int64),
      user_ids=user_ids,
      user_train_items=[t_items[by_user[a:b]] for a, b in zip(splits[:-1], splits[1:])],
      user_train_seconds=[t_seconds[by_user[a:b]] for a, b in zip(splits[:-1], splits[1:])],
      train_items=t_items[by_time], train_seconds=t_seconds[by_time],
      user_query_serialized=[eval_serialized[latest[u]] if u in latest else b""
                             for u in range(len(user_ids))],
      dropped_eval_rows=int((~keep).sum()))


def from_artifacts(examples, candidates, with_train: bool = True) -> EvalSet:
  """with_train=False skips reading the train split (no earlier movies for anyone)."""
  train = (examples_io.split_columns(examples, F.TRAIN_SPLIT, TRAIN_COLUMNS) if with_train
           else examples_io.scalar_columns([], TRAIN_COLUMNS))
  return build(examples_io.read_serialized(candidates, F.CATALOG_SPLIT), train,
               examples_io.read_serialized(examples, F.EVAL_SPLIT))
