"""The sequence scorer (the second stage): its queries are causal, it learns an order in
the data, its export scores raw ids as the model does, and the blend is what it says."""
import json
import os

import numpy as np
import pytest

from modules import sequence_scorer
from modules import sequence_trainer
from modules.hparams import RankingHParams

SMALL = RankingHParams(sequence_length=8, sequence_dim=32, sequence_max_epochs=12,
                       sequence_patience=3, sequence_batch_size=64)


def brute_force(users, movies, seconds, user, movie, t, length):
  """The history (newest first) and left-out set of one query, by a plain scan."""
  earlier = [(s, m) for u, m, s in zip(users, movies, seconds) if u == user and s < t]
  newest_first = sorted(earlier, key=lambda r: (-r[0], -r[1]))[:length]
  rated = {m for u, m, s in zip(users, movies, seconds) if u == user and s <= t} - {movie}
  return [m for _, m in newest_first], [np.log1p((t - s) / 86400) for s, _ in newest_first], rated


def test_queries_read_only_earlier_ratings_and_leave_out_what_was_rated_by_then():
  rng = np.random.default_rng(0)
  n, pad = 400, 30
  users = rng.integers(0, 12, n)
  movies = rng.integers(0, pad, n)
  seconds = rng.integers(0, 40, n) * 3600  # many ratings share a second
  log = sequence_trainer.RatingLog(users, movies, seconds, pad)
  queries = log.queries(users, movies, seconds)
  rows = np.arange(n)
  history, gaps = queries.histories(rows, 5)
  left_out = queries.left_out(rows)
  for row in rows:
    expected, expected_gaps, rated = brute_force(users, movies, seconds, users[row],
                                                 movies[row], seconds[row], 5)
    got = [m for m in history[row] if m != pad]
    assert got == expected, row
    np.testing.assert_allclose(gaps[row, :len(got)], expected_gaps, rtol=1e-6)
    assert np.all(gaps[row, len(got):] == 0)
    assert set(left_out[left_out[:, 0] == row, 1]) == rated, row
  # A same-second rating is never history.
  assert any(seconds[r] in seconds[(users == users[r]) & (rows != r)] for r in rows)


def test_newest_per_user_picks_one_row_per_user_at_its_latest_time():
  users = np.array([1, 1, 2, 1, 2, 3])
  seconds = np.array([5, 9, 4, 9, 7, 1])
  newest = sequence_trainer.newest_per_user(users, seconds)
  assert newest.tolist() == [False, False, False, True, True, True]


def test_validation_takes_the_newest_rating_of_at_most_its_limit_of_users():
  rng = np.random.default_rng(3)
  users, seconds = rng.integers(0, 50, 2_000), rng.integers(0, 10**6, 2_000)
  newest = sequence_trainer.newest_per_user(users, seconds)
  assert sequence_trainer.validation_rows(users, seconds, 50, rng).tolist() == newest.tolist()
  some = sequence_trainer.validation_rows(users, seconds, 20, rng)
  assert some.sum() == 20 and not (some & ~newest).any()  # newest rows only, one a user
  assert len(set(users[some])) == 20


def sequential_data(num_users=160, num_movies=40, length=18, seed=0):
  """Each user rates movies in the catalogue's cyclic order from a random start: the next
  movie is the last one + 1, which no popularity or co-occurrence-free model can know."""
  rng = np.random.default_rng(seed)
  users, movies, seconds = [], [], []
  for user in range(num_users):
    start, t = rng.integers(num_movies), 10**9 + int(rng.integers(10**6))
    for step in range(length):
      users.append(user)
      movies.append((start + step) % num_movies)
      seconds.append(t + step * 3600)
  return np.array(users), np.array(movies), np.array(seconds)


@pytest.fixture(scope="module")
def trained():
  users, movies, seconds = sequential_data()
  scorer, summary = sequence_trainer.train(users, movies, seconds, 40, SMALL,
                                           progress=lambda line: None)
  return scorer, summary


def test_scorer_learns_the_next_movie_and_keeps_its_best_epoch(trained):
  _, summary = trained
  by_epoch = summary["by_epoch"]
  best = max(by_epoch, key=lambda e: e["validation_ndcg_at_10"])
  assert summary["best_epoch"] == best["epoch"]
  # Chance is 10 of the ~23 movies not yet rated; the order is learnable to near 1.
  assert best["validation_hr_at_10"] > 0.9
  assert by_epoch[0]["validation_ndcg_at_10"] < best["validation_ndcg_at_10"]


def test_an_epoch_trains_on_at_most_its_cap_of_queries():
  import dataclasses  # pylint: disable=g-import-not-at-top
  users, movies, seconds = sequential_data(num_users=20)
  capped = dataclasses.replace(SMALL, sequence_max_epochs=1, sequence_max_queries_per_epoch=64)
  _, summary = sequence_trainer.train(users, movies, seconds, 40, capped,
                                      progress=lambda line: None)
  assert summary["train_queries"] == 20 * 16  # each user's 18 but the first and the newest
  assert summary["queries_per_epoch"] == 64


def export(trained, tmp_path, vocabulary=tuple(f"m{i}" for i in range(40))) -> str:
  """The trained scorer exported under tmp_path with `vocabulary` (ids m0..m39: the
  scorer's 40 movies); its path."""
  scorer, summary = trained
  vocabulary_file = tmp_path / "movie_id_vocab"
  vocabulary_file.write_text("".join(f"{movie}\n" for movie in vocabulary))
  path = str(tmp_path / "scorer")
  sequence_scorer.export(scorer, str(vocabulary_file), path, summary)
  return path


def test_exported_scorer_scores_raw_ids_as_the_model_does(trained, tmp_path):
  scorer, summary = trained
  path = export(trained, tmp_path)
  loaded = sequence_scorer.LoadedScorer(path)
  assert loaded.info["best_epoch"] == summary["best_epoch"]
  now = 10**9
  history = ["m7", "m6", "unknown", "m5"]  # newest first; an unknown id is skipped
  rated_at = [now - 3600, now - 7200, now - 8000, now - 86400 * 3]
  candidates = ["m8", "m20", "m3", "not-in-vocab"]
  scores, known = loaded.score(history, rated_at, now, candidates)
  assert known.tolist() == [True, True, True, False]
  # The same query through the Keras model, its inputs built independently here.
  ids = np.full((1, SMALL.sequence_length), 40, np.int32)
  gaps = np.zeros((1, SMALL.sequence_length), np.float32)
  ids[0, :3] = [7, 6, 5]
  gaps[0, :3] = np.log1p(np.array([3600, 7200, 86400 * 3]) / 86400)
  logits = scorer((ids, gaps)).numpy()[0]
  np.testing.assert_allclose(scores[:3], logits[[8, 20, 3]], rtol=1e-4, atol=1e-4)
  logits[[5, 6, 7]] = -np.inf  # rated: left out, as in training
  assert int(np.argmax(logits)) == 8  # the learned order: after 7 comes 8


def test_serving_scorer_on_tflite_scores_as_the_exported_graph(trained, tmp_path):
  """LiteScorer builds the core's inputs in NumPy and runs the bundle's TensorFlow Lite
  core; the exported `score` signature builds them in its graph: the same scores."""
  from components.bundle_pusher.executor import tflite_from_core  # pylint: disable=g-import-not-at-top
  path = export(trained, tmp_path, [f"m{i}" for i in range(40)] + ["m-untrained"])
  lite_path = tmp_path / "sequence_scorer.tflite"
  lite_path.write_bytes(tflite_from_core(os.path.join(path, sequence_scorer.CORE_DIR)))
  graph = sequence_scorer.LoadedScorer(path)
  lite = sequence_scorer.LiteScorer(path, str(lite_path))
  now = 10**9
  rng = np.random.default_rng(1)
  cases = [
      # longer than sequence_length (8), with unknown and untrained ids among them
      ([f"m{i}" for i in rng.permutation(40)[:11]] + ["unknown", "m-untrained", "m3"],
       list(now - rng.integers(0, 86400 * 50, 14)), ["m1", "m2", "m-untrained", "zz", "m39"]),
      (["m4", "m9"], [now - 60], ["m10", "m5"]),  # a rating time missing: the query's
      ([], [], ["m0", "m1", "m2"]),  # no history
      (["m4"], [now - 600], ["unknown", "m-untrained"]),  # no candidate known
  ]
  for history, seconds, candidates in cases:
    want_scores, want_known = graph.score(history, seconds, now, candidates)
    got_scores, got_known = lite.score(history, seconds, now, candidates)
    assert got_known.tolist() == want_known.tolist()
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-4, atol=1e-4)
  assert lite.score(["m1"], [now], now, ["m2", "zz"])[1].tolist() == [True, False]


def test_serving_scorer_refuses_an_export_without_its_model_entry(trained, tmp_path):
  _, summary = trained
  path = export(trained, tmp_path)
  info = os.path.join(path, sequence_scorer.INFO_FILE)
  with open(info, "w") as f:
    json.dump(summary, f)  # as exported before LiteScorer
  with pytest.raises(ValueError, match="has no 'model' entry"):
    sequence_scorer.LiteScorer(path, str(tmp_path / "unused.tflite"))


def test_blend_adds_standardised_scores_and_orders_unknown_candidates_by_retrieval():
  scorer = np.array([[3.0, 1.0, 2.0, 50.0]])
  retrieval = np.array([[0.4, 0.3, 0.2, 0.1]])
  known = np.array([[True, True, True, False]])
  blended = sequence_scorer.blend(scorer, retrieval, known)
  z = lambda v: (v - v.mean()) / v.std()
  expected_known = z(np.array([3.0, 1.0, 2.0])) + z(retrieval[0])[:3]
  np.testing.assert_allclose(blended[0, :3], expected_known, atol=1e-6)
  assert blended[0, 3] == pytest.approx(z(retrieval[0])[3])  # the scorer's 50 is ignored


def test_blend_weighs_the_scorer_by_scorer_weight():
  scorer = np.array([[3.0, 1.0, 2.0]])
  retrieval = np.array([[0.4, 0.3, 0.2]])
  z = lambda v: (v - v.mean()) / v.std()
  np.testing.assert_allclose(sequence_scorer.blend(scorer, retrieval, scorer_weight=0.5)[0],
                             0.5 * z(scorer[0]) + z(retrieval[0]), atol=1e-6)
  # 0: retrieval order; large: the scorer's order.
  assert list(np.argsort(-sequence_scorer.blend(scorer, retrieval, scorer_weight=0)[0])) == [0, 1, 2]
  assert list(np.argsort(-sequence_scorer.blend(scorer, retrieval, scorer_weight=10)[0])) == [0, 2, 1]


def test_blend_leaves_entries_outside_a_short_list_out():
  scorer = np.array([[1.0, 2.0, 3.0, 9.0]])
  retrieval = np.array([[0.3, 0.2, 0.1, -np.inf]])  # a list of three, padded
  blended = sequence_scorer.blend(scorer, retrieval)
  z = lambda v: (v - v.mean()) / v.std()
  np.testing.assert_allclose(blended[0, :3], z(scorer[0, :3]) + z(retrieval[0, :3]), atol=1e-6)
  assert blended[0, 3] == -np.inf


def test_tflite_scores_like_the_scorer(trained, tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from components.bundle_pusher.executor import tflite_from_core  # pylint: disable=g-import-not-at-top
  scorer, _ = trained
  core = str(tmp_path / "core")
  sequence_scorer.export_core(scorer, core)
  interpreter = tf.lite.Interpreter(model_content=tflite_from_core(core))
  run = interpreter.get_signature_runner("serving_default")
  history = np.full((2, SMALL.sequence_length), 40, np.int32)
  history[0, :3], history[1, :1] = [7, 6, 5], [30]
  gaps = np.zeros(history.shape, np.float32)
  gaps[0, :3] = [0.1, 0.5, 2.0]
  candidates = np.array([[8, 9, 0, 39], [31, 1, 2, 3]], np.int32)
  got = run(history=history, gaps=gaps, candidates=candidates)["scores"]
  expected = np.take_along_axis(scorer((history, gaps)).numpy(), candidates, 1)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
