"""Load the newest pushed bundle and retrieve movies for a user.

    from serving.retriever import load_latest_bundle
    retriever = load_latest_bundle("outputs/serving/movielens-recommender")
    retriever.recommend("42", k=10, exclude_rated=True)

Importing this module imports ScaNN, which registers the ops its SavedModels need.
"""

import dataclasses
import json
import logging
import os
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import scann  # pylint: disable=unused-import  (registers the ops of ScaNN SavedModels)
import tensorflow as tf

from bundle import contract
from bundle import layout as bundle_layout
from bundle import scann_index
from bundle.layout import BundleNotFoundError
from modules import features as F
from modules import retrieval_export

log = logging.getLogger("movrec.serving")
_EMBED_BATCH = 512  # known users embedded per call at load

@dataclasses.dataclass
class Recommendation:
  movie_id: str
  title: str
  genres: List[str]
  score: float


class Retriever:
  """User → top-k movies of one bundle (query tower + ScaNN index)."""

  def __init__(self, path: str):
    self.path = path
    self.manifest = bundle_layout.verify(path)  # every file as pushed, or InvalidBundleError
    self.version = self.manifest["version"]
    query_dir = os.path.join(path, bundle_layout.QUERY_MODEL_DIR)
    self._query_model = tf.saved_model.load(query_dir)  # keeps its variables alive
    self._query = self._query_model.signatures["serving_default"]
    self._input_specs = self._query.structured_input_signature[1]
    with open(os.path.join(query_dir, retrieval_export.INFO_FILE)) as f:
      info = json.load(f)
    self.query_features = info["raw_features"]
    self.history_max = info.get("history_max")
    self.index = scann_index.load(os.path.join(path, bundle_layout.INDEX_DIR))
    self.position = {c["movie_id"]: i for i, c in enumerate(self.index.candidates)}
    self.users: Dict[str, contract.UserRecord] = {}
    with open(os.path.join(path, bundle_layout.USERS_FILE)) as f:
      for line in f:
        user = json.loads(line)
        self.users[user["user_id"]] = user
    # What a request that leaves a demographic feature out gets: "" (the vocabulary's
    # unknown id, which training saw by demographic dropout) and the median known age.
    ages = sorted(u["features"][F.USER_AGE] for u in self.users.values()
                  if F.USER_AGE in u.get("features", {}))
    self.default_features = {F.USER_GENDER: "", F.USER_OCCUPATION: "", F.USER_ZIP_CODE: "",
                             F.USER_AGE: ages[len(ages) // 2] if ages else 0}
    # A known user's request that overrides nothing always makes the same query: its
    # embedding is computed once, here, in batches (the query tower is ~2.3 ms of a
    # request; ml-100k's 943 users take under a second; BENCHMARKS.md, "Serving the
    # second stage within issue 12's budget").
    started = time.monotonic()
    self.known_embeddings = self._embed_known_users()
    self._user_rows = {user: row for row, user in enumerate(self.users)}
    log.info("bundle %s: %d known users' query embeddings computed in %.1f s", self.version,
             len(self._user_rows), time.monotonic() - started)

  def rated_before(self, user_id: str, as_of: Optional[int] = None) -> Tuple[List[str], List[int]]:
    """(movies, when rated): the user's stored ratings, newest first; with `as_of` (unix
    seconds) only those made strictly before it, as a live system knew the user then."""
    known = self.users.get(user_id) or {}
    rated, rated_at = list(known.get("rated", [])), list(known.get("rated_at", []))
    if as_of is None:
      return rated, rated_at
    keep = [i for i, t in enumerate(rated_at) if t < as_of]
    return [rated[i] for i in keep], [rated_at[i] for i in keep]

  def query_time(self, user_id: str, timestamp: Optional[int] = None,
                 as_of: Optional[int] = None) -> int:
    """When the query is made (unix seconds): `as_of`, else `timestamp`, else the user's
    last rating's time, else the bundle's default."""
    known = self.users.get(user_id) or {}
    return int(as_of or timestamp or known.get("last_timestamp") or
               self.manifest["default_timestamp"])

  def query_inputs(self, user_id: str, features: Optional[Dict] = None,
                   timestamp: Optional[int] = None,
                   history: Optional[Sequence[str]] = None,
                   as_of: Optional[int] = None) -> Dict[str, tf.Tensor]:
    """Raw query-tower inputs: the user's stored features, overridden by `features`;
    their rated movies (newest first) and when they rated them, or `history` when given
    (rated at an unknown time: the query's, so the time pools weigh them all alike).
    `as_of` (unix seconds) backtests: the query is made then, and only the stored
    ratings made strictly before it are its history."""
    values = self.query_values(user_id, features, timestamp, history, as_of)
    return {name: tf.constant([values[name]], dtype=self._input_specs[name].dtype)
            for name in self.query_features}

  def query_values(self, user_id, features=None, timestamp=None, history=None,
                    as_of=None) -> Dict:
    """query_inputs' values, one user's, as Python lists and scalars."""
    known = self.users.get(user_id)
    values = dict(known["features"]) if known else {}
    values.update(features or {})
    values[F.USER_ID] = user_id
    values[F.TIMESTAMP] = self.query_time(user_id, timestamp, as_of)
    if history is None:
      history, rated_at = self.rated_before(user_id, as_of)
    else:
      rated_at = []
    history = list(history)[:self.history_max]
    values[F.USER_HISTORY] = history
    rated_at = list(rated_at)[:len(history)]
    values[F.USER_HISTORY_TIMESTAMPS] = rated_at + [values[F.TIMESTAMP]] * (
        len(history) - len(rated_at))
    for name in self.defaulted(values):
      values[name] = self.default_features[name]
    return values

  def _embed_known_users(self, batch_size: int = _EMBED_BATCH) -> np.ndarray:
    """[users, dim]: each known user's default query embedding (stored features, history
    and last rating time; `self.users` order), in batches of `batch_size` users."""
    ids, out = list(self.users), []
    history_pads = {F.USER_HISTORY: "", F.USER_HISTORY_TIMESTAMPS: 0}  # "" is dropped
    for start in range(0, len(ids), batch_size):
      rows = [self.query_values(user) for user in ids[start:start + batch_size]]
      inputs = {}
      for name in self.query_features:
        column = [row[name] for row in rows]
        if name in history_pads:
          width = max([len(c) for c in column] + [1])
          column = [list(c) + [history_pads[name]] * (width - len(c)) for c in column]
        inputs[name] = tf.constant(column, dtype=self._input_specs[name].dtype)
      out.append(self._query(**inputs)[retrieval_export.EMBEDDING].numpy())
    return np.concatenate(out) if out else np.zeros((0, self.index.embeddings.shape[1]))

  def stored_embedding(self, user_id: str, features: Optional[Dict] = None,
                       timestamp: Optional[int] = None,
                       history: Optional[Sequence[str]] = None,
                       as_of: Optional[int] = None) -> Optional[np.ndarray]:
    """The embedding computed at load, for a known user's default request; None for any
    other request."""
    if self.is_default_request(user_id, features, timestamp, history, as_of):
      return self.known_embeddings[self._user_rows[user_id]]
    return None

  def is_default_request(self, user_id: str, features: Optional[Dict] = None,
                         timestamp: Optional[int] = None,
                         history: Optional[Sequence[str]] = None,
                         as_of: Optional[int] = None) -> bool:
    """Whether a request (query_inputs' arguments) is a known user's that overrides
    nothing: its query is `query_values(user_id)`, the same for every such request."""
    return (user_id in self._user_rows and not features and timestamp is None and
            history is None and as_of is None)

  def embed(self, user_id: str, features: Optional[Dict] = None,
            timestamp: Optional[int] = None, history: Optional[Sequence[str]] = None,
            as_of: Optional[int] = None) -> np.ndarray:
    """The query embedding of a request (query_inputs' arguments)."""
    stored = self.stored_embedding(user_id, features, timestamp, history, as_of)
    if stored is not None:
      return stored
    return self.embed_inputs(self.query_inputs(user_id, features, timestamp, history, as_of))

  def defaulted(self, features: Optional[Dict]) -> List[str]:
    """The demographic query features `features` leaves out: they take default_features."""
    return [name for name in self.query_features
            if name in self.default_features and name not in (features or {})]

  def embed_inputs(self, inputs: Dict[str, tf.Tensor]) -> np.ndarray:
    """The query embedding of inputs made by `query_inputs`."""
    return self._query(**inputs)[retrieval_export.EMBEDDING].numpy()[0]

  def rated(self, user_id: str, as_of: Optional[int] = None) -> List[str]:
    return self.rated_before(user_id, as_of)[0]

  def recommend(self, user_id: str, k: int = 10, exclude: Iterable[str] = (),
                exclude_rated: bool = False, features: Optional[Dict] = None,
                timestamp: Optional[int] = None,
                history: Optional[Sequence[str]] = None,
                as_of: Optional[int] = None) -> List[Recommendation]:
    """Top-k movies for the user, skipping `exclude` (and their rated movies if asked;
    with `as_of`, only those rated before it)."""
    skip = set(exclude) | (set(self.rated(user_id, as_of)) if exclude_rated else set())
    return self.search(self.embed(user_id, features, timestamp, history, as_of), k, skip)

  def search(self, query: np.ndarray, k: int, skip: Iterable[str] = ()) -> List[Recommendation]:
    skip = {self.position[m] for m in skip if m in self.position}
    n = min(len(self.index.candidates), k + len(skip))
    indices, scores = self.index.search(query, n)
    out = []
    for i, score in zip(indices[0], scores[0]):
      if int(i) in skip:
        continue
      c = self.index.candidates[int(i)]
      out.append(Recommendation(c["movie_id"], c["title"], c["genres"], float(score)))
      if len(out) == k:
        break
    return out


def latest_bundle_path(serving_dir: str) -> str:
  found = bundle_layout.versions(serving_dir)
  if not found:
    raise BundleNotFoundError(f"no serving bundle under {serving_dir}; run the pipeline "
                              f"(`movrec run`) until a model and index are blessed and pushed")
  return bundle_layout.version_dir(serving_dir, found[-1])


def load_latest_bundle(serving_dir: str) -> Retriever:
  return Retriever(latest_bundle_path(serving_dir))
