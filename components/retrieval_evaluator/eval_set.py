"""The eval split arranged for catalogue-wide scoring: indices, seen movies, user queries.

Shared by the RetrievalEvaluator, the IndexBuilder (held-out queries) and bench/ (so the
baselines are measured on exactly the rows the model is).
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
  user_ids: List[str]  # user index -> user id
  seen: List[np.ndarray]  # user index -> catalogue indices rated in training
  eval_items_by_user: List[np.ndarray]  # user index -> catalogue indices rated in eval
  user_query_serialized: List[bytes]  # user index -> their latest eval rating (or b"")
  dropped_eval_rows: int  # eval ratings of movies missing from the catalogue

  @property
  def users_with_eval(self) -> np.ndarray:
    return np.array([u for u, items in enumerate(self.eval_items_by_user) if len(items)])


_KEYS = {F.USER_ID: tf.string, F.MOVIE_ID: tf.string, F.TIMESTAMP: tf.int64}


def build(catalogue_serialized: Sequence[bytes], train_serialized: Sequence[bytes],
          eval_serialized: Sequence[bytes]) -> EvalSet:
  catalogue = examples_io.scalar_columns(catalogue_serialized, {F.MOVIE_ID: tf.string})
  catalogue_ids = catalogue[F.MOVIE_ID]
  item_index = {m: i for i, m in enumerate(catalogue_ids)}
  train = examples_io.scalar_columns(train_serialized, _KEYS)
  evals = examples_io.scalar_columns(eval_serialized, _KEYS)

  user_ids = sorted(set(train[F.USER_ID]) | set(evals[F.USER_ID]))
  user_index = {u: i for i, u in enumerate(user_ids)}
  seen_lists: List[List[int]] = [[] for _ in user_ids]
  for user, movie in zip(train[F.USER_ID], train[F.MOVIE_ID]):
    if movie in item_index:
      seen_lists[user_index[user]].append(item_index[movie])

  keep = np.array([m in item_index for m in evals[F.MOVIE_ID]], dtype=bool)
  rows = np.flatnonzero(keep)
  eval_users = np.array([user_index[evals[F.USER_ID][r]] for r in rows], dtype=np.int64)
  eval_items = np.array([item_index[evals[F.MOVIE_ID][r]] for r in rows], dtype=np.int64)
  by_user: List[List[int]] = [[] for _ in user_ids]
  latest: Dict[int, int] = {}
  for r, user, item in zip(rows, eval_users, eval_items):
    by_user[user].append(item)
    if user not in latest or evals[F.TIMESTAMP][r] >= evals[F.TIMESTAMP][latest[user]]:
      latest[user] = r
  return EvalSet(
      catalogue_ids=catalogue_ids,
      catalogue_serialized=list(catalogue_serialized),
      eval_serialized=[eval_serialized[r] for r in rows],
      eval_users=eval_users, eval_items=eval_items, user_ids=user_ids,
      seen=[np.unique(np.array(s, dtype=np.int64)) for s in seen_lists],
      eval_items_by_user=[np.unique(np.array(s, dtype=np.int64)) for s in by_user],
      user_query_serialized=[eval_serialized[latest[u]] if u in latest else b""
                             for u in range(len(user_ids))],
      dropped_eval_rows=int((~keep).sum()))


def from_artifacts(examples, candidates, with_seen: bool = True) -> EvalSet:
  """with_seen=False skips reading the train split (then `seen` is empty for everyone)."""
  train = examples_io.read_serialized(examples, F.TRAIN_SPLIT) if with_seen else []
  return build(examples_io.read_serialized(candidates, F.CATALOG_SPLIT), train,
               examples_io.read_serialized(examples, F.EVAL_SPLIT))
