"""The two-stage recommender and its HTTP service, on a bundle a real pipeline run pushed."""
import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from serving import bundle_layout
from serving.recommender import (FEATURES, PERSONALIZED, POPULARITY, LiveRecommender,
                                 Recommender, UnknownMovieError, wait_for_version)


@pytest.fixture(scope="module")
def serving_dir(pushed_run, tmp_path_factory):
  """A private copy of the run's serving directory (tests here push new versions)."""
  config, _, _ = pushed_run
  target = tmp_path_factory.mktemp("serving") / "bundles"
  shutil.copytree(config.serving_dir, target)
  return str(target)


@pytest.fixture(scope="module")
def recommender(serving_dir):
  return Recommender(bundle_layout.version_dir(serving_dir, bundle_layout.versions(serving_dir)[-1]))


def push_copy(serving_dir: str) -> int:
  """Publishes the newest bundle again as a new version, the way the pusher does."""
  latest = bundle_layout.versions(serving_dir)[-1]
  version = latest + 1
  tmp = os.path.join(serving_dir, f".tmp-{version}")
  shutil.copytree(bundle_layout.version_dir(serving_dir, latest), tmp)
  manifest_path = os.path.join(tmp, bundle_layout.MANIFEST_FILE)
  with open(manifest_path) as f:
    manifest = json.load(f)
  manifest["version"] = version
  with open(manifest_path, "w") as f:
    json.dump(manifest, f)
  os.rename(tmp, bundle_layout.version_dir(serving_dir, version))
  return version


def test_known_user_gets_unseen_movies_ordered_by_the_ranker(recommender):
  user = next(iter(recommender.retriever.users))
  rated = set(recommender.retriever.rated(user))
  result = recommender.recommend(user, k=10, candidates=40)
  assert result["path"] == PERSONALIZED
  items = result["items"]
  assert len(items) == 10 and not rated & {i["movie_id"] for i in items}
  scores = [i["ranking_score"] for i in items]
  assert scores == sorted(scores, reverse=True)
  # The ranking scores are the ranking model's, and the top 10 are the best of the 40.
  again = recommender.score(user, [i["movie_id"] for i in items])
  assert again == pytest.approx(scores, abs=1e-5)
  retrieved = recommender.retriever.recommend(user, k=40, exclude_rated=True)
  all_scores = recommender.score(user, [r.movie_id for r in retrieved])
  assert min(scores) >= sorted(all_scores, reverse=True)[9] - 1e-5


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
  assert not set(recommender.popular[:3]) & {i["movie_id"] for i in described["items"]}


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
  import uvicorn  # pylint: disable=g-import-not-at-top
  from serving.http_service import create_app  # pylint: disable=g-import-not-at-top
  live = LiveRecommender(serving_dir, poll_seconds=0.2).start()
  port = free_port()
  server = uvicorn.Server(uvicorn.Config(create_app(live), host="127.0.0.1", port=port,
                                         log_level="warning"))
  thread = threading.Thread(target=server.run, daemon=True)
  thread.start()
  base = f"http://127.0.0.1:{port}"
  for _ in range(100):
    try:
      urllib.request.urlopen(base + "/healthz", timeout=1)
      break
    except (urllib.error.URLError, ConnectionError):
      time.sleep(0.1)
  yield base, live
  server.should_exit = True
  thread.join(timeout=10)
  live.stop()


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
  status, body = call(base, "GET", "/healthz")
  assert status == 200 and body["status"] == "ok"
  status, body = call(base, "GET", "/metadata")
  assert status == 200 and body["retrieval_model"]["id"] and body["ranking_model"]["id"]


@pytest.mark.parametrize("path,body,status", [
    ("/recommend", {}, 422),                                   # no user_id
    ("/recommend", {"user_id": "1", "k": 0}, 422),             # k out of range
    ("/recommend", {"user_id": "1", "k": "ten"}, 422),         # wrong type
    ("/recommend", {"user_id": "1", "colour": "red"}, 422),    # unknown field
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


def test_http_hot_swap_during_requests_drops_nothing(service, serving_dir, recommender):
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
  new = push_copy(serving_dir)
  assert wait_for_version(live, new, timeout=60)
  time.sleep(0.5)
  stop.set()
  for t in threads:
    t.join()
  assert results and all(status == 200 for status, _ in results)
  versions = {body["version"] for _, body in results}
  assert versions == {old, new}
  assert call(base, "GET", "/metadata")[1]["version"] == new
