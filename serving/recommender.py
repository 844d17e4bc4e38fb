"""The two-stage recommender over a pushed bundle, and a hot-swapping holder of it.

  retrieve N candidates (query tower + ScaNN) → drop movies the user has rated →
  order them by ranking score: the sequence scorer's score and the retrieval score, each
  standardised within the N, added (modules/sequence_scorer.py) → top k, each with its
  retrieval score, ranking score and the rating model's predicted rating

Orderings (`order_by`; the response says which served):
  ranking_score     the default when the bundle's ranking model has a sequence scorer
                    and the pipeline's TwoStageEvaluator blessed its order (it beat
                    retrieval order on the eval rows; the manifest's `ranking_order`).
                    On ml-100k's time cut it measured 1.09x retrieval order's HR@10 and
                    1.11x its NDCG@10 (BENCHMARKS.md, "A sequence scorer ..."). Asked
                    for by name, it is served whenever the bundle has a scorer.
  retrieval_score   the first stage alone: the default otherwise, and then the
                    response's `order_fallback` says why.
  predicted_rating  every candidate's rating predicted, the top k by it. On the next-item
                    protocol it halves HR@10 (BENCHMARKS.md, "Ranking"): a rating
                    regressor answers "how many stars", not "which will they pick next".

What runs per request: a known user's request that overrides nothing (no features,
time, rated movies or as_of) reads their query embedding and their rating features, both
computed when the bundle loads, so only ScaNN, the sequence scorer and the rating core
run, the last two on TensorFlow Lite (serving/lite_ratings.py; `metadata()` says what
runs each). Any other request runs the query tower and the rating graph on its inputs.

Which path served a request is part of the answer:
  personalized  the user is in the bundle's user table
  features      unknown user, described by the request: any of the demographics and/or
                rated movies (what it leaves out is taken as unknown, and listed in
                `defaulted_features`; rated ids not in the catalogue in `ignored_movie_ids`)
  popularity    unknown user and nothing to go on: the most rated movies
"""

import ctypes
import ctypes.util
import gc
import json
import logging
import os
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from bundle import layout as bundle_layout
from modules import features as F
from modules import sequence_scorer
from modules.errors import ConfigError, MovrecError
from serving import lite_ratings
from serving.retriever import BundleNotFoundError, Retriever

log = logging.getLogger("movrec.serving")

PERSONALIZED, FEATURES, POPULARITY = "personalized", "features", "popularity"
# How a personalised list is ordered (the response's "order_by").
RANKING_ORDER, RETRIEVAL_ORDER, RATING_ORDER = "ranking_score", "retrieval_score", "predicted_rating"
ORDERS = (RANKING_ORDER, RETRIEVAL_ORDER, RATING_ORDER)
# What runs the sequence scorer (`metadata()["sequence_scorer"]`).
SCORER_ON_TFLITE, SCORER_ON_SAVEDMODEL = "tflite", "savedmodel"
# What rates known users' default requests (`metadata()["predicted_rating"]`; any other
# request is rated by the graph).
RATINGS_ON_TFLITE, RATINGS_ON_GRAPH = "tflite", "graph"
# How long a swap lets requests still running on the old bundle finish (they take
# milliseconds) before collecting it.
_RELEASE_GRACE_SECONDS = 1.0
# ... and when the poller collects once more. In HTTP workers under load, 5 of 10 swaps
# left the old bundle's function graphs (~88,000 objects, ~90 MiB) still held after the
# grace (by no thread's frame; the holder was not found), and let go within 10 s.
_SETTLE_AGAIN_SECONDS = 10.0
_MAX_COLLECT_PASSES = 5


def _release_freed_memory() -> Callable[[], None]:
  """glibc keeps what a swapped-out bundle freed in its heaps; malloc_trim hands the free
  pages back. In a soak with a push every 20 s it cut the growth of resident memory after
  six swaps from +600 to +320 MiB (BENCHMARKS.md, "Serving"). A no-op off glibc."""
  try:
    trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
  except (OSError, AttributeError):
    return lambda: None
  return lambda: trim(0)


release_freed_memory = _release_freed_memory()


def collect_until_quiet(max_passes: int = _MAX_COLLECT_PASSES) -> List[int]:
  """Full collections until one finds nothing (at most `max_passes`); what each found.

  One pass is not always enough for a swapped-out bundle: the finalizers TensorFlow's
  objects run in the first pass can let go of more of the bundle (its function graphs,
  ~87,000 objects), which only the next pass sees; with `freeze_heap` they were frozen
  until the next swap instead (BENCHMARKS.md, "Serving")."""
  found = []
  while len(found) < max_passes:
    found.append(gc.collect())
    if not found[-1]:
      break
  return found


class UnknownMovieError(MovrecError, KeyError):
  """The movie id is not in the bundle's catalogue."""


class Recommender:
  """Retrieval + ranking over one bundle (immutable once loaded)."""

  def __init__(self, path: str):
    self.retriever = Retriever(path)
    self.path, self.version, self.manifest = path, self.retriever.version, self.retriever.manifest
    ranking_dir = os.path.join(path, bundle_layout.RANKING_MODEL_DIR)
    self._rank = self._sequence = None
    self.sequence_runtime = None  # what runs the sequence scorer, when there is one
    if os.path.isdir(ranking_dir):
      self._ranking_model = tf.saved_model.load(ranking_dir)  # keeps its variables alive
      self._rank = self._ranking_model.signatures["serve_features"]
      self._rank_specs = self._rank.structured_input_signature[1]
      scorer_dir = os.path.join(ranking_dir, sequence_scorer.EXPORT_DIR)
      if os.path.isdir(scorer_dir):
        self._sequence = self._load_sequence_scorer(scorer_dir)
    # Why a request that names no ordering is not ordered by ranking score, if it is not.
    self.no_ranking_order = self._why_not_ranking_order()
    with open(os.path.join(path, bundle_layout.POPULARITY_FILE)) as f:
      self.popular = [movie for movie, _ in json.load(f)]
    self._lite_ratings = None
    if self._rank is not None:
      self._score_rows = self._compile_scorer()
      self._user_inputs = list(self._score_rows.structured_input_signature[0][1])
      self._lite_ratings = self._load_lite_ratings(ranking_dir)

  def _load_lite_ratings(self, ranking_dir: str) -> Optional[lite_ratings.LiteRatings]:
    """Known users' default requests rated on the bundle's TensorFlow Lite core, their
    features and the catalogue's transformed once here; None (logged: every request is
    then rated by the graph, ~2 ms slower) when the bundle cannot."""
    started = time.monotonic()
    try:
      users = {}
      for user in self.retriever.users:
        values = self.retriever.query_values(user)
        users[user] = {name: values[name] for name in self._user_inputs}
      ratings = lite_ratings.LiteRatings(
          ranking_dir, os.path.join(self.path, bundle_layout.RANKING_TFLITE_FILE),
          self._ranking_model.signatures["transform_features"],
          self.retriever.index.candidates, users)
    except (OSError, ValueError, KeyError, tf.errors.OpError) as e:
      log.warning("bundle %s: predicted ratings run on the ranking graph for every request, "
                  "as its TensorFlow Lite core cannot serve them: %s: %s", self.version,
                  type(e).__name__, e)
      return None
    log.info("bundle %s: %d movies' and %d users' rating features transformed in %.1f s",
             self.version, len(self.retriever.index.candidates), len(users),
             time.monotonic() - started)
    return ratings

  def _load_sequence_scorer(self, scorer_dir: str):
    """The scorer on the bundle's TensorFlow Lite core (~0.4 ms a request); when the
    bundle cannot serve it that way, on its SavedModel (~4.5 ms), said in the log and in
    `metadata()`."""
    lite = os.path.join(self.path, bundle_layout.SEQUENCE_TFLITE_FILE)
    try:
      scorer = sequence_scorer.LiteScorer(scorer_dir, lite)
      self.sequence_runtime = SCORER_ON_TFLITE
      return scorer
    except (OSError, ValueError, KeyError) as e:
      why = f"{type(e).__name__}: {e}"
    log.warning("bundle %s: the sequence scorer runs on its SavedModel, ~10x slower a "
                "request, as it cannot run on TensorFlow Lite: %s", self.version, why)
    self.sequence_runtime = f"{SCORER_ON_SAVEDMODEL} ({why})"
    return sequence_scorer.LoadedScorer(scorer_dir)

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
      return rank(**inputs)[F.RATING_OUTPUT]

    # Traced here, once: a request calls the graph without tf.function's argument
    # binding (~0.5 ms of a 5 ms request), and concurrent first requests do not each trace.
    return score_rows.get_concrete_function()

  @property
  def has_sequence_scorer(self) -> bool:
    """Whether this bundle can order by ranking score (asked for by name, at least)."""
    return self._sequence is not None

  def _why_not_ranking_order(self) -> Optional[str]:
    """None when the default order is ranking score: the bundle has a sequence scorer and
    the TwoStageEvaluator blessed its order (the manifest's `ranking_order`)."""
    bundle = f"bundle {self.version}"
    if self._rank is None:
      return f"{bundle} has no ranking model"
    if self._sequence is None:
      return f"{bundle}'s ranking model has no sequence scorer"
    order = self.manifest.get("ranking_order")
    if not order:
      return f"{bundle}'s ranking order was not evaluated (no TwoStageEvaluator blessing)"
    if not order.get("blessed"):
      return f"{bundle}'s ranking order was not blessed: {order.get('reasons')}"
    return None

  # --- the two stages --------------------------------------------------------------
  def recommend(self, user_id: str, k: int = 10, candidates: int = 100,
                features: Optional[Dict] = None, timestamp: Optional[int] = None,
                rated: Optional[Sequence[str]] = None, as_of: Optional[int] = None,
                order_by: Optional[str] = None) -> Dict:
    """Top-k movies for the user with their scores and predicted rating, the path taken
    and the ordering (`order_by`: one of ORDERS; None, the best the bundle has).

    `as_of` (unix seconds) answers as the service would have then (backtesting): the
    query is made at that time, and only the user's ratings made strictly before it are
    history and are excluded as seen."""
    fallback = None
    if order_by is None:
      order_by, fallback = ((RETRIEVAL_ORDER, self.no_ranking_order) if self.no_ranking_order
                            else (RANKING_ORDER, None))
    if order_by not in ORDERS:
      raise ConfigError(f"order_by {order_by!r} is not one of {list(ORDERS)}")
    if order_by == RANKING_ORDER and self._sequence is None:
      raise ConfigError(f"cannot order by {RANKING_ORDER}: {self.no_ranking_order}")
    known = user_id in self.retriever.users
    ignored = [m for m in rated or () if m not in self.retriever.position]
    rated = None if rated is None else [m for m in rated if m in self.retriever.position]
    if not known and not features and not rated:
      response = self._popular(user_id, k, ())
      if ignored:
        response["ignored_movie_ids"] = ignored
      return response
    seen = set(self.retriever.rated(user_id, as_of)) | set(rated or ())
    defaulted = [] if known else self.retriever.defaulted(features)
    # A known user's default request reads what was computed at load; another request
    # runs the query tower on its inputs (history: the request's rated movies if given,
    # else the user's stored ones).
    default = self.retriever.is_default_request(user_id, features, timestamp, rated, as_of)
    inputs = None if default else self.retriever.query_inputs(
        user_id, features, timestamp, history=rated, as_of=as_of)
    query = (self.retriever.stored_embedding(user_id) if default else
             self.retriever.embed_inputs(inputs))
    found = self.retriever.search(query, candidates, skip=seen)
    items = [{"movie_id": r.movie_id, "title": r.title, "genres": r.genres,
              "retrieval_score": r.score} for r in found]
    if self._rank is None and order_by == RATING_ORDER:
      raise ConfigError(f"bundle {self.version} has no ranking model to order by "
                        "predicted rating")
    if order_by == RANKING_ORDER and items:
      self._rank_by_sequence(items, user_id, self.retriever.query_time(user_id, timestamp, as_of),
                             rated, as_of)
    # Rating order needs every candidate's rating; the others the k shown only.
    rated_items = items if order_by == RATING_ORDER else items[:k]
    if self._rank is not None and rated_items:
      movie_ids = [i["movie_id"] for i in rated_items]
      if default and self._lite_ratings is not None:
        ratings = self._lite_ratings.predict(user_id, [self.retriever.position[m]
                                                       for m in movie_ids])
      else:
        ratings = self._score(movie_ids, inputs if inputs is not None else
                              self.retriever.query_inputs(user_id))
      for item, rating in zip(rated_items, ratings):
        item[RATING_ORDER] = float(rating)
    if order_by == RATING_ORDER:
      items.sort(key=lambda i: -i[RATING_ORDER])  # stable: ties keep retrieval order
    response = self._response(user_id, PERSONALIZED if known else FEATURES, items[:k])
    response["order_by"] = order_by
    if fallback:
      response["order_fallback"] = fallback
    if defaulted:  # features the request left out, taken as unknown
      response["defaulted_features"] = defaulted
    if ignored:
      response["ignored_movie_ids"] = ignored  # not in this bundle's catalogue
    if as_of is not None:
      response["as_of"] = int(as_of)
    return response

  def _rank_by_sequence(self, items: List[Dict], user_id: str, now: int,
                        rated: Optional[Sequence[str]], as_of: Optional[int]) -> None:
    """Sets each candidate's ranking_score and sorts `items` by it (stable)."""
    if rated is None:
      history, rated_at = self.retriever.rated_before(user_id, as_of)
    else:  # the request's rated movies, at an unknown time: taken as the query's
      history, rated_at = list(rated), []
    scores, known = self._sequence.score(history, rated_at, now, [i["movie_id"] for i in items])
    ranking = sequence_scorer.blend(scores[None], np.array([[i["retrieval_score"] for i in items]]),
                                    known[None])[0]
    for item, score in zip(items, ranking):
      item[RANKING_ORDER] = float(score)
    items.sort(key=lambda i: -i[RANKING_ORDER])

  def score(self, user_id: str, movie_ids: Sequence[str], features: Optional[Dict] = None,
            timestamp: Optional[int] = None) -> np.ndarray:
    """Predicted ratings of `movie_ids` for the user (the ranking model alone)."""
    return self._score(movie_ids, self.retriever.query_inputs(user_id, features, timestamp,
                                                              history=[]))

  def _score(self, movie_ids: Sequence[str], query_inputs: Dict) -> np.ndarray:
    rows = tf.constant([self.retriever.position[m] for m in movie_ids], tf.int64)
    user = {name: query_inputs[name] for name in self._user_inputs}
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
    """What is served, by artifact id (no server paths: the HTTP service returns this)."""
    m = self.manifest
    ids = lambda key: {"id": (m.get(key) or {}).get("id")} if m.get(key) else None
    return {"version": self.version, "pushed_at": m.get("pushed_at"),
            "retrieval_model": ids("retrieval_model"),
            "index": {**ids("index"), "num_candidates": m["index"].get("num_candidates")},
            "ranking_model": ids("ranking_model"), "sequence_scorer": self.sequence_runtime,
            "predicted_rating": (RATINGS_ON_TFLITE if self._lite_ratings is not None else
                                 RATINGS_ON_GRAPH if self._rank is not None else None),
            "num_users": m.get("num_users")}


class LiveRecommender:
  """Serves the newest valid bundle (or the pinned one); picks up a new push without a
  restart.

  A background thread polls the serving directory; a new version is verified and loaded
  beside the current one, then swapped in by one reference assignment, so requests in
  flight finish on the bundle they started with and none is dropped. A version that
  fails to load is remembered with its reason and not tried again; start-up falls back
  to the newest version that loads. `health()` says "degraded" (and why) while a newer
  version than the one served has failed.

  `freeze_heap` (the HTTP service sets it): after each load, the objects alive are moved
  out of the garbage collector's sight (`gc.freeze`). A loaded bundle is ~0.5 million
  tracked Python objects (TensorFlow's function graphs, the user table); every full
  collection walked them all, stopping every request for up to 370 ms (BENCHMARKS.md,
  "Serving"). They are handed back before the next swap, so a swapped-out bundle is
  still collected. Off by default: it is a whole-process setting.
  """

  def __init__(self, serving_dir: str, poll_seconds: float = 2.0, freeze_heap: bool = False):
    self.serving_dir = serving_dir
    self.freeze_heap = freeze_heap
    self.failed: Dict[int, str] = {}  # version -> why it could not be served
    self.reload_failures = 0
    self.listeners: List[Callable[[], None]] = []  # called after each load or failure
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self.poll_seconds = poll_seconds
    self._thread = None
    self._current = None
    self._settle_again_at: Optional[float] = None  # set by a swap; the poller collects again
    for version in self._wanted():
      if self._try_load(version):
        break
    if self._current is None:
      reasons = "; ".join(f"{v}: {r}" for v, r in sorted(self.failed.items())) or "none pushed"
      raise BundleNotFoundError(f"no valid bundle under {serving_dir} ({reasons})")
    self._settle_heap()

  @property
  def current(self) -> Recommender:
    return self._current

  @property
  def resettle_pending(self) -> bool:
    """Whether a swap's second settle of the heap is still to come (the poller does it
    _SETTLE_AGAIN_SECONDS after the swap): until then the old bundle may still be held."""
    return self._settle_again_at is not None

  @property
  def last_error(self) -> Optional[str]:
    """Why the newest failed version newer than the served one failed, if any."""
    newer = [v for v in self.failed if v > self._current.version]
    return f"version {max(newer)}: {self.failed[max(newer)]}" if newer else None

  def _wanted(self) -> List[int]:
    """Versions to serve, best first: the pinned one, or the newest; none known to fail."""
    return [v for v in bundle_layout.versions_to_serve(self.serving_dir) if v not in self.failed]

  def _try_load(self, version: int) -> bool:
    try:
      fresh = Recommender(bundle_layout.version_dir(self.serving_dir, version))
    except Exception as e:  # pylint: disable=broad-except
      self.failed[version] = f"{type(e).__name__}: {e}"
      self.reload_failures += 1
      log.error("bundle version %s cannot be served (kept out until it is pushed again "
                "under a new version): %s", version, self.failed[version])
      self._notify()
      return False
    old, self._current = self._current, fresh
    if old is not None:
      log.info("serving bundle version %s (was %s)", version, old.version)
      # The old version's SavedModels sit in reference cycles, so only a collection frees
      # them, and not while a request that started on the old version is still running:
      # collected at once, they survived it (and with `freeze_heap` were frozen) until the
      # next swap, one bundle more per process (BENCHMARKS.md, "Serving").
      del old
      time.sleep(_RELEASE_GRACE_SECONDS)
      self._settle_heap()
      self._settle_again_at = time.monotonic() + _SETTLE_AGAIN_SECONDS
    self._notify()
    return True

  def _notify(self) -> None:
    for listener in self.listeners:
      listener()

  def _settle_heap(self) -> None:
    """Collects what the last load or swap left behind; with `freeze_heap`, first hands
    the frozen objects (the previous bundle among them) back to the collector, then
    freezes what survives."""
    if self.freeze_heap:
      gc.unfreeze()
    collect_until_quiet()
    release_freed_memory()
    if self.freeze_heap:
      gc.freeze()

  def _settle_again_if_due(self) -> None:
    with self._lock:  # not between a refresh's freeze and unfreeze
      if self._settle_again_at is not None and time.monotonic() >= self._settle_again_at:
        self._settle_again_at = None
        self._settle_heap()

  def refresh(self) -> bool:
    """Loads the wanted version if it is not the one served; True when it swapped."""
    with self._lock:
      wanted = self._wanted()
      if not wanted or wanted[0] == self._current.version or wanted[0] in self.failed:
        return False
      return self._try_load(wanted[0])

  def health(self) -> Dict:
    pinned = bundle_layout.pinned_version(self.serving_dir)
    body = {"status": "ok", "version": self._current.version, "pinned": pinned}
    problem = self.last_error
    if pinned is not None and pinned != self._current.version:
      problem = f"pinned version {pinned} is not served: {self.failed.get(pinned, 'not loaded yet')}"
    if problem:
      body.update(status="degraded", reason=problem)
    return body

  def start(self) -> "LiveRecommender":
    def poll():
      while not self._stop.wait(self.poll_seconds):
        self.refresh()
        self._settle_again_if_due()
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
