"""The two-stage recommender and its HTTP service, on a bundle a real pipeline run pushed."""
import contextlib
import gc
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref

import pytest

from bundle import layout as bundle_layout
from serving import recommender as recommender_lib
from serving import workers
from serving.recommender import (FEATURES, PERSONALIZED, POPULARITY, LiveRecommender,
                                 Recommender, UnknownMovieError, wait_for_version)
from serving.retriever import latest_bundle_path


@pytest.fixture(scope="module")
def serving_dir(pushed_run, tmp_path_factory):
  """A private copy of the run's serving directory (tests here push new versions)."""
  config, _, _ = pushed_run
  target = tmp_path_factory.mktemp("serving") / "bundles"
  shutil.copytree(config.serving_dir, target)
  return str(target)


@pytest.fixture(scope="module")
def recommender(serving_dir):
  return Recommender(latest_bundle_path(serving_dir))


def push(serving_dir: str, artifacts) -> int:
  """A new version written by the BundlePusher's own code from the run's artifacts."""
  from components.bundle_pusher import executor as pusher  # pylint: disable=g-import-not-at-top
  return int(os.path.basename(pusher.write_bundle(
      serving_dir, artifacts["model"], artifacts["index"], artifacts["examples"],
      artifacts["ranking"])))


def test_known_user_gets_unseen_movies_in_retrieval_order_with_predicted_ratings(recommender):
  user = next(iter(recommender.retriever.users))
  rated = set(recommender.retriever.rated(user))
  result = recommender.recommend(user, k=10, candidates=40, order_by="retrieval_score")
  assert result["path"] == PERSONALIZED and result["order_by"] == "retrieval_score"
  items = result["items"]
  assert len(items) == 10 and not rated & {i["movie_id"] for i in items}
  # The top 10 are retrieval's 10 best unseen movies, in its order.
  retrieved = recommender.retriever.recommend(user, k=40, exclude_rated=True)
  assert [i["movie_id"] for i in items] == [r.movie_id for r in retrieved[:10]]
  assert [i["retrieval_score"] for i in items] == pytest.approx(
      [r.score for r in retrieved[:10]], abs=1e-6)
  # Each carries the ranking model's predicted rating: checked against the exported
  # model's tf.Example signature (parsing, Transform and the networks, the path TFX's
  # Evaluator scores), fed Examples built here from the user table and the catalogue.
  ratings = [i["predicted_rating"] for i in items]
  assert independent_ratings(recommender, user, [i["movie_id"] for i in items]) == \
      pytest.approx(ratings, abs=1e-4)


def independent_ratings(recommender, user, movie_ids):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from modules import features as F  # pylint: disable=g-import-not-at-top
  stored = recommender.retriever.users[user]
  catalogue = {c["movie_id"]: c for c in recommender.retriever.index.candidates}

  def feature(values):
    if isinstance(values[0], int):
      return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))

  examples = []
  for movie in movie_ids:
    c = catalogue[movie]
    values = {F.USER_ID: [user], F.TIMESTAMP: [int(stored["last_timestamp"])],
              F.MOVIE_ID: [movie], F.MOVIE_TITLE: [c["title"]], F.USER_RATING: None,
              **{name: [value] for name, value in stored["features"].items()}}
    if c["genres"]:
      values[F.MOVIE_GENRES] = list(c["genres"])
    if c["year"]:
      values[F.MOVIE_RELEASE_YEAR] = [int(c["year"])]
    example = tf.train.Example(features=tf.train.Features(feature={
        name: feature(v) for name, v in values.items() if v is not None}))
    examples.append(example.SerializeToString())
  model = tf.saved_model.load(os.path.join(recommender.path, bundle_layout.RANKING_MODEL_DIR))
  out = model.signatures["serving_default"](examples=tf.constant(examples))
  return [float(v) for v in out["predictions"].numpy().reshape(-1)]


def test_ranking_order_blends_the_sequence_scorer_with_retrieval(recommender):
  """The ranking score, recomputed here from the exported scorer's own signature and
  the retrieval scores, standardised by hand."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  retriever = recommender.retriever
  user = max(retriever.users, key=lambda u: len(retriever.users[u]["rated"]))
  result = recommender.recommend(user, k=10, candidates=40, order_by="ranking_score")
  assert result["order_by"] == "ranking_score" and "order_fallback" not in result
  assert recommender.metadata()["sequence_scorer"] == recommender_lib.SCORER_ON_TFLITE
  items = result["items"]
  assert all({"retrieval_score", "ranking_score", "predicted_rating"} <= set(i) for i in items)
  retrieved = retriever.recommend(user, k=40, exclude_rated=True)
  stored = retriever.users[user]
  scorer = tf.saved_model.load(os.path.join(recommender.path, bundle_layout.RANKING_MODEL_DIR,
                                            "assets.extra", "sequence_scorer"))
  out = scorer.signatures["score"](
      user_history=tf.constant([stored["rated"]]),
      user_history_timestamps=tf.constant([stored["rated_at"]], tf.int64),
      timestamp=tf.constant([stored["last_timestamp"]], tf.int64),
      candidates=tf.constant([[r.movie_id for r in retrieved]]))
  sequence, known = out["scores"].numpy()[0].astype(float), out["known"].numpy()[0]
  z = lambda v: (v - v.mean()) / v.std()
  sequence_z = np.zeros(len(sequence))  # a movie the scorer never trained on: 0
  sequence_z[known] = z(sequence[known])
  expected = sequence_z + z(np.array([r.score for r in retrieved]))
  top = np.argsort(-expected, kind="stable")[:10]
  assert [i["movie_id"] for i in items] == [retrieved[t].movie_id for t in top]
  assert [i["ranking_score"] for i in items] == pytest.approx(expected[top], abs=1e-4)
  assert [i["retrieval_score"] for i in items] == pytest.approx(
      [retrieved[t].score for t in top], abs=1e-6)


def test_a_bundle_without_a_sequence_scorer_says_why_it_orders_by_retrieval(
    pushed_artifacts, tmp_path):
  from components.bundle_pusher import executor as pusher  # pylint: disable=g-import-not-at-top
  path = pusher.write_bundle(str(tmp_path / "bundles"), pushed_artifacts["model"],
                             pushed_artifacts["index"], pushed_artifacts["examples"], None)
  bare = Recommender(path)
  user = next(iter(bare.retriever.users))
  result = bare.recommend(user, k=5, candidates=20)
  assert result["order_by"] == "retrieval_score"
  assert "has no ranking model" in result["order_fallback"]
  with pytest.raises(ValueError, match="cannot order by ranking_score"):
    bare.recommend(user, k=5, order_by="ranking_score")


def test_ordering_by_predicted_rating_is_the_best_rated_of_the_candidates(recommender):
  user = next(iter(recommender.retriever.users))
  result = recommender.recommend(user, k=10, candidates=40, order_by="predicted_rating")
  assert result["order_by"] == "predicted_rating"
  ratings = [i["predicted_rating"] for i in result["items"]]
  assert ratings == sorted(ratings, reverse=True)
  retrieved = recommender.retriever.recommend(user, k=40, exclude_rated=True)
  all_ratings = recommender.score(user, [r.movie_id for r in retrieved])
  assert min(ratings) >= sorted(all_ratings, reverse=True)[9] - 1e-5
  with pytest.raises(ValueError, match="order_by"):
    recommender.recommend(user, order_by="stars")


def test_the_query_sees_when_the_user_rated_each_movie(recommender):
  retriever = recommender.retriever
  user = max(retriever.users, key=lambda u: len(retriever.users[u]["rated"]))
  stored = retriever.users[user]
  inputs = retriever.query_inputs(user)
  history = [m.decode() for m in inputs["user_history"].numpy()[0]]
  times = list(inputs["user_history_timestamps"].numpy()[0])
  assert history == stored["rated"][:len(history)]
  assert times == stored["rated_at"][:len(history)] and times == sorted(times, reverse=True)
  # The time pools make the embedding depend on when: all rated "now" is another query.
  same_history_no_times = retriever.query_inputs(user, history=history)
  assert set(same_history_no_times["user_history_timestamps"].numpy()[0]) == {
      int(inputs["timestamp"].numpy()[0])}
  assert not (retriever.embed_inputs(inputs) ==
              retriever.embed_inputs(same_history_no_times)).all()


def test_known_users_default_queries_are_embedded_once_at_load_as_one_by_one(recommender):
  """The embeddings computed at load in batches are the query tower's answer to each
  user's own query; a request that overrides anything is embedded afresh."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  retriever = recommender.retriever
  users = list(retriever.users)
  assert retriever.known_embeddings.shape[0] == len(users)
  longest = max(users, key=lambda u: len(retriever.users[u]["rated"]))
  for user in users[:20] + [longest]:
    one_by_one = retriever.embed_inputs(retriever.query_inputs(user))
    np.testing.assert_allclose(retriever.embed(user), one_by_one, atol=1e-5)
  stored = retriever.users[longest]
  overrides = [dict(timestamp=stored["last_timestamp"] + 86400 * 30),
               dict(as_of=stored["rated_at"][3]), dict(history=stored["rated"][:2]),
               dict(features={"user_age": 70})]
  for override in overrides:
    assert retriever.stored_embedding(longest, **override) is None
    fresh = retriever.embed_inputs(retriever.query_inputs(longest, **override))
    np.testing.assert_array_equal(retriever.embed(longest, **override), fresh)
    if "features" not in override:  # another time or history is another query
      assert not np.allclose(fresh, retriever.embed(longest), atol=1e-4), override


def test_default_requests_are_rated_on_tflite_as_the_graph_rates_them(recommender):
  """A known user's default request is rated by the TensorFlow Lite core on features
  transformed at load; `score` (and any request that overrides something) by the graph."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  assert recommender.metadata()["predicted_rating"] == recommender_lib.RATINGS_ON_TFLITE
  retriever = recommender.retriever
  for user in list(retriever.users)[:15]:
    items = recommender.recommend(user, k=10, candidates=40, order_by="retrieval_score")["items"]
    ids = [i["movie_id"] for i in items]
    np.testing.assert_allclose([i["predicted_rating"] for i in items],
                               recommender.score(user, ids), atol=1e-4)
  later = retriever.users[user]["last_timestamp"] + 86400 * 400
  items = recommender.recommend(user, k=10, candidates=40, timestamp=later,
                                order_by="retrieval_score")["items"]
  np.testing.assert_allclose([i["predicted_rating"] for i in items],
                             recommender.score(user, [i["movie_id"] for i in items],
                                               timestamp=later), atol=1e-4)


def test_backtesting_as_of_a_past_time_uses_only_earlier_ratings(recommender):
  retriever = recommender.retriever
  user = max(retriever.users, key=lambda u: len(retriever.users[u]["rated"]))
  stored = retriever.users[user]
  as_of = stored["rated_at"][4]  # the user's fifth-newest rating: it and four newer are "later"
  later = {m for m, t in zip(stored["rated"], stored["rated_at"]) if t >= as_of}
  earlier = [m for m, t in zip(stored["rated"], stored["rated_at"]) if t < as_of]
  assert len(later) >= 5 and earlier
  inputs = retriever.query_inputs(user, as_of=as_of)
  history = [m.decode() for m in inputs["user_history"].numpy()[0]]
  assert history == earlier[:len(history)] and not later & set(history)
  assert int(inputs["timestamp"].numpy()[0]) == as_of
  # Everything not rated before as_of is rankable, the later-rated movies included.
  everything = len(retriever.index.candidates)
  result = recommender.recommend(user, k=everything, candidates=everything, as_of=as_of)
  returned = {i["movie_id"] for i in result["items"]}
  assert result["as_of"] == as_of and result["path"] == PERSONALIZED
  assert later <= returned and not returned & set(earlier)
  assert len(returned) == everything - len(set(earlier))
  # Without as_of the same movies are seen (excluded), and the query is another one.
  now = {i["movie_id"] for i in recommender.recommend(user, k=everything,
                                                      candidates=everything)["items"]}
  assert not now & later
  assert not (retriever.embed_inputs(inputs) ==
              retriever.embed_inputs(retriever.query_inputs(user))).all()


def test_unknown_users_get_the_features_or_the_popularity_path(recommender):
  cold = recommender.recommend("no-such-user", k=5)
  assert cold["path"] == POPULARITY
  assert [i["movie_id"] for i in cold["items"]] == recommender.popular[:5]
  features = {"user_age": 30, "user_gender": "F", "user_occupation": "writer",
              "user_zip_code": "94110"}
  described = recommender.recommend("no-such-user", k=5, features=features,
                                    rated=recommender.popular[:3])
  assert described["path"] == FEATURES and len(described["items"]) == 5
  assert "defaulted_features" not in described
  assert not set(recommender.popular[:3]) & {i["movie_id"] for i in described["items"]}


def test_cold_start_with_any_subset_of_features_is_personalised(recommender):
  catalogue = [c["movie_id"] for c in recommender.retriever.index.candidates]
  # Rated movies alone (no demographics): their history drives the answer.
  first = recommender.recommend("stranger", k=10, rated=catalogue[:5])
  second = recommender.recommend("stranger", k=10, rated=catalogue[-5:])
  for answer in (first, second):
    assert answer["path"] == FEATURES and len(answer["items"]) == 10
    assert sorted(answer["defaulted_features"]) == sorted(
        recommender.retriever.default_features)
  assert [i["movie_id"] for i in first["items"]] != [i["movie_id"] for i in second["items"]]
  # Some demographics only: the rest are defaulted, and listed.
  partial = recommender.recommend("stranger", k=5, features={"user_gender": "F"})
  assert partial["path"] == FEATURES
  assert "user_gender" not in partial["defaulted_features"]
  assert "user_age" in partial["defaulted_features"]
  # Unknown movie ids are ignored, and said to be; nothing usable left is popularity.
  mixed = recommender.recommend("stranger", k=5, rated=[catalogue[0], "no-such-movie"])
  assert mixed["path"] == FEATURES and mixed["ignored_movie_ids"] == ["no-such-movie"]
  assert catalogue[0] not in {i["movie_id"] for i in mixed["items"]}
  nothing = recommender.recommend("stranger", k=5, rated=["no-such-movie"])
  assert nothing["path"] == POPULARITY and nothing["ignored_movie_ids"] == ["no-such-movie"]


def test_similar_movies_exclude_the_movie_itself(recommender):
  movie = recommender.retriever.index.candidates[0]["movie_id"]
  result = recommender.similar(movie, k=5)
  ids = [i["movie_id"] for i in result["items"]]
  assert len(ids) == 5 and movie not in ids
  with pytest.raises(UnknownMovieError):
    recommender.similar("no-such-movie")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(serving_dir):
  """The real HTTP service (uvicorn) on a loopback port, polling for new bundles."""
  from serving.http_service import create_app  # pylint: disable=g-import-not-at-top
  live = LiveRecommender(serving_dir, poll_seconds=0.2).start()
  with running(create_app(live)) as base:
    yield base, live
  live.stop()


@contextlib.contextmanager
def running(app):
  """`app` served by uvicorn on a free loopback port, in a thread; yields its base URL."""
  import uvicorn  # pylint: disable=g-import-not-at-top
  port = free_port()
  server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                         log_level="critical"))
  thread = threading.Thread(target=server.run, daemon=True)
  thread.start()
  base = f"http://127.0.0.1:{port}"
  for _ in range(100):
    try:
      urllib.request.urlopen(base + "/healthz", timeout=1)
      break
    except (urllib.error.URLError, ConnectionError):
      time.sleep(0.1)
  try:
    yield base
  finally:
    server.should_exit = True
    thread.join(timeout=10)


def call(base, method, path, body=None):
  data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
  request = urllib.request.Request(base + path, data=data, method=method,
                                   headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(request, timeout=10) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def test_http_good_requests(service, recommender):
  base, _ = service
  user = next(iter(recommender.retriever.users))
  status, body = call(base, "POST", "/recommend", {"user_id": user, "k": 5})
  assert status == 200 and body["path"] == PERSONALIZED and len(body["items"]) == 5
  assert call(base, "POST", "/recommend", {"user_id": "stranger"})[1]["path"] == POPULARITY
  movie = recommender.retriever.index.candidates[0]["movie_id"]
  status, body = call(base, "GET", f"/similar?movie_id={movie}&k=3")
  assert status == 200 and len(body["items"]) == 3
  as_of = recommender.retriever.users[user]["rated_at"][2]  # a backtest through HTTP
  status, body = call(base, "POST", "/recommend", {"user_id": user, "k": 5, "as_of": as_of})
  expected = recommender.recommend(user, k=5, as_of=as_of)
  assert status == 200 and body["as_of"] == as_of
  assert [i["movie_id"] for i in body["items"]] == [i["movie_id"] for i in expected["items"]]
  status, body = call(base, "POST", "/recommend",
                      {"user_id": user, "k": 5, "order_by": "predicted_rating"})
  expected = recommender.recommend(user, k=5, order_by="predicted_rating")
  assert status == 200 and body["order_by"] == "predicted_rating"
  assert [i["movie_id"] for i in body["items"]] == [i["movie_id"] for i in expected["items"]]
  status, body = call(base, "GET", "/healthz")
  assert status == 200 and body["status"] == "ok"
  status, body = call(base, "GET", "/metadata")
  assert status == 200 and body["retrieval_model"]["id"] and body["ranking_model"]["id"]


@pytest.mark.parametrize("path,body,status", [
    ("/recommend", {}, 422),                                   # no user_id
    ("/recommend", {"user_id": "1", "k": 0}, 422),             # k out of range
    ("/recommend", {"user_id": "1", "k": "ten"}, 422),         # wrong type
    ("/recommend", {"user_id": "1", "colour": "red"}, 422),    # unknown field
    ("/recommend", {"user_id": "1", "order_by": "stars"}, 422),  # unknown ordering
    ("/recommend", b"{not json", 422),                         # malformed JSON
    ("/recommend", {"user_id": "1", "k": 50, "candidates": 10}, 400),
    ("/recommend", {"user_id": "1", "features": {"shoe_size": 9}}, 400),
])
def test_http_bad_requests_get_a_4xx_with_a_message(service, path, body, status):
  base, _ = service
  got, answer = call(base, "POST", path, body)
  assert got == status and answer["detail"]


def test_http_unknown_movie_is_404(service):
  base, _ = service
  status, body = call(base, "GET", "/similar?movie_id=no-such-movie")
  assert status == 404 and "no-such-movie" in body["detail"]


def test_http_hot_swap_during_requests_drops_nothing(service, serving_dir, recommender,
                                                     pushed_artifacts):
  base, live = service
  user = next(iter(recommender.retriever.users))
  old = live.current.version
  results, stop = [], threading.Event()

  def hammer():
    while not stop.is_set():
      results.append(call(base, "POST", "/recommend", {"user_id": user, "k": 3}))

  threads = [threading.Thread(target=hammer) for _ in range(3)]
  for t in threads:
    t.start()
  time.sleep(0.5)
  new = push(serving_dir, pushed_artifacts)
  assert wait_for_version(live, new, timeout=60)
  time.sleep(0.5)
  stop.set()
  for t in threads:
    t.join()
  assert results and all(status == 200 for status, _ in results)
  versions = {body["version"] for _, body in results}
  assert versions == {old, new}
  assert call(base, "GET", "/metadata")[1]["version"] == new


def test_a_swap_under_load_leaves_one_bundle_in_memory(serving_dir, pushed_artifacts):
  """Requests still running on the old bundle when it is swapped out do not keep it: what
  the service holds (frozen out of the collector's sight) once the poller has settled the
  heap again is one bundle. The swap's own settle may come too early: under load the old
  bundle's graphs stay held for a few seconds after the requests end (recommender.py's
  _SETTLE_AGAIN_SECONDS); this failed on a loaded machine when measured right after it."""
  gc.collect()
  gc.freeze()
  live = None
  try:
    before = gc.get_freeze_count()
    live = LiveRecommender(serving_dir, poll_seconds=0.2, freeze_heap=True)
    one_bundle = gc.get_freeze_count() - before  # the objects a loaded bundle keeps
    swapped = threading.Event()
    live.listeners.append(swapped.set)  # called once a swap has settled the heap
    user = next(iter(live.current.retriever.users))
    stop = threading.Event()

    def hammer():
      while not stop.is_set():
        live.current.recommend(user, k=3)

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
      t.start()
    try:
      time.sleep(0.3)
      new = push(serving_dir, pushed_artifacts)
      live.start()
      assert swapped.wait(120) and live.current.version == new
    finally:
      stop.set()
      for t in threads:
        t.join()
    deadline = time.monotonic() + 60
    while live.resettle_pending:
      assert time.monotonic() < deadline, "the poller did not settle the heap again"
      time.sleep(0.2)
    live.stop()  # no settle under way while we count
    held = gc.get_freeze_count() - before
    assert held < 1.5 * one_bundle, (held, one_bundle)  # two bundles would be ~2x
  finally:
    if live is not None:
      live.stop()
    gc.unfreeze()


class _Cycle:
  """Garbage only a collection frees (it refers to itself)."""

  def __init__(self):
    self.me = self


class _Owner(_Cycle):
  """A cycle whose finalizer lets go of another object, as TensorFlow's objects do."""
  registry = {}

  def __init__(self, key):
    super().__init__()
    self.key = key

  def __del__(self):
    _Owner.registry.pop(self.key, None)


def _orphan_owner_of_a_cycle(key: str) -> weakref.ref:
  """A weak reference to a cycle that only an unreachable _Owner's finalizer releases."""
  _Owner.registry[key] = _Cycle()
  _Owner(key)  # unreachable at once: only the collector finalizes it
  return weakref.ref(_Owner.registry[key])


def test_collections_go_on_until_what_finalizers_release_is_freed():
  gc.collect()
  gc.disable()  # no automatic collection in between
  try:
    one_pass = _orphan_owner_of_a_cycle("one pass")
    gc.collect()
    assert one_pass() is not None  # released by the finalizer after this pass had looked
    gc.collect()
    assert one_pass() is None

    found = recommender_lib.collect_until_quiet()
    assert found[-1] == 0
    until_quiet = _orphan_owner_of_a_cycle("until quiet")
    found = recommender_lib.collect_until_quiet()
    assert until_quiet() is None and len(found) >= 2 and found[-1] == 0, found
  finally:
    gc.enable()


def test_what_a_swapped_out_bundle_leaves_held_is_collected_by_the_poller_later(
    serving_dir, pushed_artifacts, monkeypatch):
  """Something still held a moment after a swap (as TensorFlow held the old graphs under
  load) is collected by the poller's second settle, not frozen until the next swap."""
  monkeypatch.setattr(recommender_lib, "_RELEASE_GRACE_SECONDS", 0.05)
  gc.collect()
  gc.freeze()
  live = LiveRecommender(serving_dir, poll_seconds=0.1, freeze_heap=True)
  swapped = threading.Event()
  live.listeners.append(swapped.set)  # called once a swap has settled the heap
  live.start()
  try:
    still_held = {}
    for again_seconds in (3600.0, 0.5):  # no second settle in time; then one
      monkeypatch.setattr(recommender_lib, "_SETTLE_AGAIN_SECONDS", again_seconds)
      held = [_Cycle()]  # alive through the swap's own settle, let go right after it
      ref = weakref.ref(held[0])
      swapped.clear()
      new = push(serving_dir, pushed_artifacts)
      assert swapped.wait(60) and live.current.version == new
      held.clear()
      time.sleep(2.0)
      still_held[again_seconds] = ref() is not None
    assert still_held == {3600.0: True, 0.5: False}  # frozen until collected again
  finally:
    live.stop()
    gc.unfreeze()


TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def guarded_service(serving_dir):
  """The service as exposed: a bearer token, plus a route that fails unexpectedly."""
  from serving.http_service import create_app  # pylint: disable=g-import-not-at-top
  live = LiveRecommender(serving_dir)
  app = create_app(live, token=TOKEN)

  @app.get("/boom")
  def boom():
    raise RuntimeError("secret detail at /srv/models/private")

  with running(app) as base:
    yield base, live


def raw_call(base, method, path, body=None, token=None):
  """(status, headers, body bytes)."""
  headers = {"Content-Type": "application/json"}
  if token:
    headers["Authorization"] = f"Bearer {token}"
  data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
  request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
  try:
    with urllib.request.urlopen(request, timeout=10) as response:
      return response.status, response.headers, response.read()
  except urllib.error.HTTPError as e:
    return e.code, e.headers, e.read()


def test_http_with_a_token_refuses_callers_without_it(guarded_service, recommender):
  base, _ = guarded_service
  user = next(iter(recommender.retriever.users))
  body = {"user_id": user, "k": 3}
  for token in (None, "wrong"):
    for method, path, payload in [("POST", "/recommend", body), ("GET", "/metadata", None),
                                  ("GET", "/metrics", None), ("GET", "/similar?movie_id=1", None)]:
      status, headers, _ = raw_call(base, method, path, payload, token=token)
      assert status == 401 and headers["WWW-Authenticate"] == "Bearer", (path, token)
  status, _, answer = raw_call(base, "POST", "/recommend", body, token=TOKEN)
  assert status == 200 and len(json.loads(answer)["items"]) == 3
  assert raw_call(base, "GET", "/healthz")[0] == 200  # probes need no token


def test_http_exposes_no_docs_paths_or_exception_text(guarded_service):
  base, _ = guarded_service
  assert raw_call(base, "GET", "/docs", token=TOKEN)[0] == 404
  assert raw_call(base, "GET", "/openapi.json", token=TOKEN)[0] == 404
  status, headers, answer = raw_call(base, "GET", "/boom", token=TOKEN)
  body = json.loads(answer)
  assert status == 500 and body == {"detail": "internal error", "request_id": body["request_id"]}
  assert headers["X-Request-ID"] == body["request_id"] and b"secret" not in answer
  status, _, answer = raw_call(base, "GET", "/metadata", token=TOKEN)
  metadata = json.loads(answer)
  assert status == 200 and "path" not in metadata and b"uri" not in answer
  assert b'"/' not in answer  # no absolute path anywhere
  assert metadata["retrieval_model"]["id"] and metadata["index"]["num_candidates"]


def test_http_refuses_bodies_over_the_limit(guarded_service):
  base, _ = guarded_service
  huge = {"user_id": "1", "rated": ["x" * 60] * 2000}  # ~130 KB
  status, _, answer = raw_call(base, "POST", "/recommend", huge, token=TOKEN)
  assert status == 413 and b"over" in answer


def chunked_post(base, path, body: bytes):
  """POST without a Content-Length (chunked transfer): (status, body)."""
  host, port = base.rsplit("/", 1)[-1].split(":")
  connection = http.client.HTTPConnection(host, int(port), timeout=10)
  try:
    connection.request("POST", path, body=iter([body[:100], body[100:]]), encode_chunked=True,
                       headers={"Content-Type": "application/json",
                                "Authorization": f"Bearer {TOKEN}"})
    response = connection.getresponse()
    return response.status, response.read()
  finally:
    connection.close()


def test_http_measures_bodies_sent_without_a_length(guarded_service, recommender):
  base, _ = guarded_service
  huge = json.dumps({"user_id": "1", "rated": ["x" * 60] * 2000}).encode()
  status, answer = chunked_post(base, "/recommend", huge)
  assert status == 413 and b"over" in answer
  user = next(iter(recommender.retriever.users))
  status, answer = chunked_post(base, "/recommend",
                                json.dumps({"user_id": user, "k": 3}).encode().ljust(300))
  assert status == 200 and len(json.loads(answer)["items"]) == 3  # the body reached the app


def test_http_metrics_count_requests_and_show_the_bundle(guarded_service, recommender):
  base, live = guarded_service
  user = next(iter(recommender.retriever.users))
  for _ in range(3):
    raw_call(base, "POST", "/recommend", {"user_id": user, "k": 2}, token=TOKEN)
  raw_call(base, "POST", "/recommend", {"user_id": user, "k": 0}, token=TOKEN)  # a 422
  status, headers, answer = raw_call(base, "GET", "/metrics", token=TOKEN)
  text = answer.decode()
  assert status == 200 and headers["Content-Type"].startswith("text/plain")

  def sample(line_start):
    lines = [l for l in text.splitlines() if l.startswith(line_start)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

  assert sample('movrec_requests_total{path="/recommend",status="200"}') >= 3
  assert sample('movrec_requests_total{path="/recommend",status="422"}') >= 1
  assert sample('movrec_request_seconds_count{path="/recommend"}') >= 4
  assert sample("movrec_bundle_version") == live.current.version
  assert sample("movrec_bundle_reload_failures") == 0


def test_binding_beyond_loopback_needs_a_token(serving_dir, capsys):
  from movrec import main as cli  # pylint: disable=g-import-not-at-top
  from serving.exposure import ServiceConfigError, check_exposure  # pylint: disable=g-import-not-at-top
  with pytest.raises(ServiceConfigError, match="MOVREC_API_TOKEN"):
    check_exposure("0.0.0.0", None)
  check_exposure("0.0.0.0", "a-token")
  check_exposure("127.0.0.1", None)
  os.environ.pop("MOVREC_API_TOKEN", None)
  assert cli.main(["serve", "--host", "0.0.0.0", "--serving-dir", serving_dir]) == 1
  assert "token" in capsys.readouterr().err


def test_one_process_service_answers_and_stops_on_sigterm(serving_dir, recommender, tmp_path):
  """`movrec serve` without --workers: http_service.serve, as a user starts it."""
  port = free_port()
  with open(tmp_path / "stderr.txt", "w") as log:
    process = subprocess.Popen(
        [sys.executable, "-m", "movrec.main", "serve", "--serving-dir", serving_dir,
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=log, text=True)
    base = f"http://127.0.0.1:{port}"

    def ready():
      try:
        return call(base, "GET", "/healthz")[0] == 200
      except (urllib.error.URLError, ConnectionError):
        return False

    try:
      assert wait_until(ready), "the service did not start"
      user = next(iter(recommender.retriever.users))
      status, body = call(base, "POST", "/recommend", {"user_id": user, "k": 3})
      assert status == 200 and len(body["items"]) == 3
      assert body["version"] in bundle_layout.versions(serving_dir)
    finally:
      process.send_signal(signal.SIGTERM)
      code = process.wait(timeout=60)
  # uvicorn (>= 0.29) shuts down gracefully, then re-raises the signal it caught, so the
  # exit status says "terminated by SIGTERM"; a hung shutdown fails the wait above.
  assert code in (0, -signal.SIGTERM), open(tmp_path / "stderr.txt").read()[-2000:]
  # Nothing valid to serve: a clear refusal, not a traceback.
  empty = tmp_path / "no-bundles"
  empty.mkdir()
  done = subprocess.run([sys.executable, "-m", "movrec.main", "serve", "--serving-dir",
                         str(empty), "--port", str(free_port())],
                        capture_output=True, text=True, timeout=120)
  assert done.returncode != 0 and "no valid bundle" in done.stderr
  assert "Traceback" not in done.stderr


# --- several worker processes (serving/workers.py) ------------------------------------
def start_workers(serving_dir: str, port: int, stderr) -> subprocess.Popen:
  """`movrec serve --workers 2`; stderr: a file or PIPE (then read it, or the service
  blocks once the pipe is full)."""
  return subprocess.Popen(
      [sys.executable, "-m", "movrec.main", "serve", "--serving-dir", serving_dir,
       "--port", str(port), "--workers", "2"],
      stdout=subprocess.DEVNULL, stderr=stderr, text=True)


def worker_pids(parent: int) -> set:
  with open(f"/proc/{parent}/task/{parent}/children") as f:
    children = {int(pid) for pid in f.read().split()}
  # multiprocessing's resource tracker is a child too; the workers run spawn_main.
  return {pid for pid in children if "spawn_main" in open(f"/proc/{pid}/cmdline").read()}


def reaped(pid: int) -> bool:
  """Gone from /proc: all of its threads exited and the supervisor collected it. A
  zombie main thread is not enough: until the last thread exits, the process still holds
  its listening socket, and connections the kernel hands that socket are reset."""
  return not os.path.exists(f"/proc/{pid}")


def wait_until(condition, timeout: float = 120.0) -> bool:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if condition():
      return True
    time.sleep(0.2)
  return False


@pytest.fixture(scope="module")
def two_workers(serving_dir, tmp_path_factory):
  port = free_port()
  log = open(tmp_path_factory.mktemp("workers") / "stderr.txt", "w")
  process = start_workers(serving_dir, port, log)
  base = f"http://127.0.0.1:{port}"

  def ready():
    try:
      return (len(worker_pids(process.pid)) == 2 and workers.listening_sockets(port) == 2
              and call(base, "GET", "/healthz")[0] == 200)
    except (urllib.error.URLError, ConnectionError, FileNotFoundError):
      return False

  assert wait_until(ready), "the workers did not start"
  yield base, process
  process.send_signal(signal.SIGINT)
  assert process.wait(timeout=60) == 0
  log.close()


def test_workers_share_one_port_and_add_up_their_metrics(two_workers, recommender):
  base, process = two_workers

  def recommend_count():
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    line = [l for l in text.splitlines()
            if l.startswith('movrec_requests_total{path="/recommend",status="200"}')]
    return float(line[0].rsplit(" ", 1)[1]) if line else 0.0

  before = recommend_count()
  user = next(iter(recommender.retriever.users))
  # Each call is a new connection: the kernel hashes them across both workers' sockets.
  answers = [call(base, "POST", "/recommend", {"user_id": user, "k": 3}) for _ in range(40)]
  assert all(status == 200 and len(body["items"]) == 3 for status, body in answers)
  # Whichever worker answers /metrics counts every worker's requests.
  assert recommend_count() - before == 40
  assert len(worker_pids(process.pid)) == 2


def loaded_tensorflow(pid: int) -> bool:
  """Whether the process has TensorFlow's shared libraries mapped."""
  with open(f"/proc/{pid}/maps") as f:
    return "tensorflow" in f.read()


def test_the_supervisor_checks_bundles_without_loading_tensorflow(two_workers):
  # It verified the bundle before starting the workers (serving.workers.serve); they
  # load the models, it only restarts them (~480 MiB less resident).
  _, process = two_workers
  workers = worker_pids(process.pid)
  assert workers and all(loaded_tensorflow(pid) for pid in workers)
  assert not loaded_tensorflow(process.pid)


def test_a_killed_worker_is_replaced_and_the_port_keeps_answering(two_workers, recommender):
  base, process = two_workers
  victim = min(worker_pids(process.pid))
  os.kill(victim, signal.SIGKILL)
  assert wait_until(lambda: reaped(victim), timeout=30)
  user = next(iter(recommender.retriever.users))

  def answered():
    try:
      return call(base, "POST", "/recommend", {"user_id": user, "k": 2})[0] == 200
    except ConnectionResetError:
      # A connection the kernel had already handed to the victim's socket is reset
      # (Linux moves none to the other worker unless net.ipv4.tcp_migrate_req is set).
      return False

  assert wait_until(answered, timeout=10)
  for _ in range(10):  # then the other worker answers every request meanwhile
    assert answered()
  assert wait_until(lambda: len(worker_pids(process.pid) - {victim}) == 2
                    and workers.listening_sockets(int(base.rsplit(":", 1)[1])) == 2)


def test_a_bound_socket_counts_as_listening_only_once_it_listens():
  sock = workers._listen("127.0.0.1", 0)  # pylint: disable=protected-access
  port = sock.getsockname()[1]
  with sock, workers._listen("127.0.0.1", port) as twin:  # pylint: disable=protected-access
    assert workers.listening_sockets(port) == 0  # bound, as while a worker loads its bundle
    sock.listen()
    assert workers.listening_sockets(port) == 1
    twin.listen()
    assert workers.listening_sockets(port) == 2


def test_worker_sockets_send_without_nagle_delay():
  """asyncio sets TCP_NODELAY only on connections of a socket created as TCP: with the
  default protocol 0, responses waited on Nagle's algorithm (p50 56 ms instead of 28)."""
  import asyncio  # pylint: disable=g-import-not-at-top
  listener = workers._listen("127.0.0.1", 0)  # pylint: disable=protected-access
  seen = []

  async def main():
    def on_connect(reader, writer):  # pylint: disable=unused-argument
      sock = writer.get_extra_info("socket")
      seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
      writer.close()
    server = await asyncio.start_server(on_connect, sock=listener)
    _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
    while not seen:
      await asyncio.sleep(0.01)
    writer.close()
    server.close()

  asyncio.run(main())
  assert seen == [1]


def test_workers_that_cannot_start_stop_the_service(serving_dir, tmp_path):
  # Nothing valid to serve: refused before any worker starts.
  empty = tmp_path / "no-bundles"
  empty.mkdir()
  done = subprocess.run([sys.executable, "-m", "movrec.main", "serve", "--serving-dir",
                         str(empty), "--port", str(free_port()), "--workers", "2"],
                        capture_output=True, text=True, timeout=120)
  assert done.returncode != 0 and "no valid bundle" in done.stderr
  # The port is held by another program: every worker fails the same way, so the
  # supervisor stops rather than restarting them for ever.
  with socket.socket() as holder:
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    process = start_workers(serving_dir, holder.getsockname()[1], subprocess.PIPE)
    _, err = process.communicate(timeout=180)
  from serving.workers import STARTUP_FAILURE  # pylint: disable=g-import-not-at-top
  assert process.returncode == STARTUP_FAILURE
  assert "Address already in use" in err
