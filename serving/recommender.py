"""The two-stage recommender over a pushed bundle, and a hot-swapping holder of it.

  retrieve N candidates (query tower + ScaNN) → drop movies the user has rated →
  score them with the ranking model → top k by predicted rating

Which path served a request is part of the answer:
  personalized  the user is in the bundle's user table
  features      unknown user, described by the request (demographics and/or rated movies)
  popularity    unknown user and nothing to go on: the most rated movies
"""

import json
import os
import threading
import time
from typing import Dict, List, Optional, Sequence

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from modules import features as F  # pylint: disable=g-import-not-at-top
from modules import ranking_trainer  # pylint: disable=g-import-not-at-top
from serving import bundle_layout  # pylint: disable=g-import-not-at-top
from serving.retriever import Retriever, UnknownUserError, latest_bundle_path  # pylint: disable=g-import-not-at-top

PERSONALIZED, FEATURES, POPULARITY = "personalized", "features", "popularity"


class UnknownMovieError(KeyError):
  """The movie id is not in the bundle's catalogue."""


class Recommender:
  """Retrieval + ranking over one bundle (immutable once loaded)."""

  def __init__(self, path: str):
    self.retriever = Retriever(path)
    self.path, self.version, self.manifest = path, self.retriever.version, self.retriever.manifest
    ranking_dir = os.path.join(path, bundle_layout.RANKING_MODEL_DIR)
    self._rank = None
    if os.path.isdir(ranking_dir):
      self._ranking_model = tf.saved_model.load(ranking_dir)  # keeps its variables alive
      self._rank = self._ranking_model.signatures["serve_features"]
      self._rank_specs = self._rank.structured_input_signature[1]
    with open(os.path.join(path, bundle_layout.POPULARITY_FILE)) as f:
      self.popular = [movie for movie, _ in json.load(f)]
    if self._rank is not None:
      self._score_rows = self._compile_scorer()

  def _compile_scorer(self):
    """One graph call per request: gathers the candidates' raw features from tensors
    built once here, repeats the user's, and runs the ranking signature."""
    candidates = self.retriever.index.candidates
    width = max((len(c["genres"]) for c in candidates), default=1) or 1
    movie = {
        F.MOVIE_ID: tf.constant([c["movie_id"] for c in candidates]),
        F.MOVIE_TITLE: tf.constant([c["title"] for c in candidates]),
        F.MOVIE_GENRES: tf.constant([c["genres"] + [""] * (width - len(c["genres"]))
                                     for c in candidates]),
        F.MOVIE_RELEASE_YEAR: tf.constant([c["year"] or 0 for c in candidates], tf.int64),
    }
    user_specs = {name: tf.TensorSpec([1], spec.dtype, name=name)
                  for name, spec in self._rank_specs.items() if name not in movie}
    rank = self._rank

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64), user_specs])
    def score_rows(rows, user):
      n = tf.shape(rows)[0]
      inputs = {name: tf.gather(value, rows) for name, value in movie.items()}
      inputs.update({name: tf.repeat(value, n) for name, value in user.items()})
      return rank(**inputs)[ranking_trainer.PREDICTIONS]

    return score_rows

  # --- the two stages --------------------------------------------------------------
  def recommend(self, user_id: str, k: int = 10, candidates: int = 100,
                features: Optional[Dict] = None, timestamp: Optional[int] = None,
                rated: Optional[Sequence[str]] = None, as_of: Optional[int] = None) -> Dict:
    """Top-k movies for the user with retrieval and ranking scores, and the path taken.

    `as_of` (unix seconds) answers as the service would have then (backtesting): the
    query is made at that time, and only the user's ratings made strictly before it are
    history and are excluded as seen."""
    known = user_id in self.retriever.users
    if not known and not features and not rated:
      return self._popular(user_id, k, rated or ())
    seen = set(self.retriever.rated(user_id, as_of)) | set(rated or ())
    try:
      # History: the request's rated movies if given, else the user's stored ones.
      inputs = self.retriever.query_inputs(user_id, features, timestamp,
                                           history=None if rated is None else list(rated),
                                           as_of=as_of)
    except UnknownUserError:
      return self._popular(user_id, k, seen)
    found = self.retriever.search(self.retriever.embed_inputs(inputs), candidates, skip=seen)
    items = [{"movie_id": r.movie_id, "title": r.title, "genres": r.genres,
              "retrieval_score": r.score} for r in found]
    if self._rank is not None and items:
      ratings = self._score([i["movie_id"] for i in items], inputs)
      for item, rating in zip(items, ratings):
        item["ranking_score"] = float(rating)
      items.sort(key=lambda i: -i["ranking_score"])
    response = self._response(user_id, PERSONALIZED if known else FEATURES, items[:k])
    if as_of is not None:
      response["as_of"] = int(as_of)
    return response

  def score(self, user_id: str, movie_ids: Sequence[str], features: Optional[Dict] = None,
            timestamp: Optional[int] = None) -> np.ndarray:
    """Predicted ratings of `movie_ids` for the user (the ranking model alone)."""
    return self._score(movie_ids, self.retriever.query_inputs(user_id, features, timestamp,
                                                              history=[]))

  def _score(self, movie_ids: Sequence[str], query_inputs: Dict) -> np.ndarray:
    rows = tf.constant([self.retriever.position[m] for m in movie_ids], tf.int64)
    user = {name: query_inputs[name] for name in self._score_rows.input_signature[1]}
    return self._score_rows(rows, user).numpy().reshape(-1)

  def similar(self, movie_id: str, k: int = 10) -> Dict:
    """Nearest movies to `movie_id` by candidate embedding, itself excluded."""
    position = self.retriever.position.get(movie_id)
    if position is None:
      raise UnknownMovieError(f"movie {movie_id!r} is not in the catalogue of bundle "
                              f"{self.version}")
    found = self.retriever.search(self.retriever.index.embeddings[position], k, skip=[movie_id])
    title = self.retriever.index.candidates[position]["title"]
    return {"movie_id": movie_id, "title": title, "version": self.version,
            "items": [{"movie_id": r.movie_id, "title": r.title, "genres": r.genres,
                       "score": r.score} for r in found]}

  # --- helpers ---------------------------------------------------------------------
  def _popular(self, user_id: str, k: int, skip) -> Dict:
    skip = set(skip)
    items = []
    for movie in self.popular:
      if movie in skip or movie not in self.retriever.position:
        continue
      c = self.retriever.index.candidates[self.retriever.position[movie]]
      items.append({"movie_id": movie, "title": c["title"], "genres": c["genres"]})
      if len(items) == k:
        break
    return self._response(user_id, POPULARITY, items)

  def _response(self, user_id: str, path: str, items: List[Dict]) -> Dict:
    return {"user_id": user_id, "path": path, "version": self.version, "items": items}

  def metadata(self) -> Dict:
    m = self.manifest
    return {"version": self.version, "path": self.path, "pushed_at": m.get("pushed_at"),
            "retrieval_model": m.get("retrieval_model"), "index": m.get("index"),
            "ranking_model": m.get("ranking_model"), "num_users": m.get("num_users")}


class LiveRecommender:
  """Serves the newest bundle; picks up a new push without a restart.

  A background thread polls the serving directory; a new version is loaded beside the
  current one and then swapped in by one reference assignment, so requests in flight
  finish on the bundle they started with and none is dropped.
  """

  def __init__(self, serving_dir: str, poll_seconds: float = 2.0):
    self.serving_dir = serving_dir
    self._current = Recommender(latest_bundle_path(serving_dir))
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self.poll_seconds = poll_seconds
    self._thread = None
    self.last_error: Optional[str] = None

  @property
  def current(self) -> Recommender:
    return self._current

  def refresh(self) -> bool:
    """Loads a newer bundle if there is one; True when it swapped."""
    with self._lock:
      versions = bundle_layout.versions(self.serving_dir)
      if not versions or versions[-1] <= self._current.version:
        return False
      try:
        fresh = Recommender(bundle_layout.version_dir(self.serving_dir, versions[-1]))
      except Exception as e:  # pylint: disable=broad-except
        self.last_error = f"loading version {versions[-1]}: {e}"  # keep serving the old one
        return False
      self._current = fresh
      self.last_error = None
      return True

  def start(self) -> "LiveRecommender":
    def poll():
      while not self._stop.wait(self.poll_seconds):
        self.refresh()
    self._thread = threading.Thread(target=poll, name="bundle-poller", daemon=True)
    self._thread.start()
    return self

  def stop(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=5)


def wait_for_version(live: LiveRecommender, version: int, timeout: float = 30.0) -> bool:
  """Blocks until `live` serves `version` or newer (tests and scripts)."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if live.current.version >= version:
      return True
    time.sleep(0.05)
  return False
