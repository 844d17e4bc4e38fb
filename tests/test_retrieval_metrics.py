"""Catalogue-wide retrieval metrics against hand-computed values."""
import math

import numpy as np
import pytest

from components.retrieval_evaluator import metrics

# 2 users, 5 movies. Scores are per user (the same for each of a user's eval rows).
SCORES = np.array([
    [0.9, 0.8, 0.7, 0.6, 0.5],   # user 0
    [0.1, 0.2, 0.3, 0.4, 0.5],   # user 1
], dtype=np.float32)
# Eval rows: (user, movie) and the movies the user rated before that row.
USERS = np.array([0, 0, 1])
ITEMS = np.array([2, 4, 0])
EARLIER = [np.array([0]), np.array([0]), np.array([4, 3])]


def score_rows(rows):
  return SCORES[USERS[rows]]


def earlier(rows):
  return [EARLIER[r] for r in rows]


def test_hit_rate_with_and_without_the_earlier_movies():
  m = metrics.next_item(score_rows, ITEMS, earlier, ks=(1, 2, 3))
  # Nothing removed: movie 2 of user 0 -> rank 2 (0-based), movie 4 -> 4, user 1's movie 0 -> 4.
  assert m["top_1"] == 0 and m["top_2"] == 0
  assert m["top_3"] == pytest.approx(1 / 3)
  # Earlier movies removed: user 0 loses movie 0 -> ranks 1 and 3; user 1 loses 4 and 3 -> 2.
  assert m["hr_at_1"] == 0
  assert m["hr_at_2"] == pytest.approx(1 / 3)
  assert m["hr_at_3"] == pytest.approx(2 / 3)
  # NDCG@10: 1/log2(rank + 2) per row, averaged.
  expected = (1 / math.log2(3) + 1 / math.log2(5) + 1 / math.log2(4)) / 3
  assert m["ndcg_at_10"] == pytest.approx(expected)


def test_the_rated_movie_is_never_removed_even_if_rated_before():
  m = metrics.next_item(score_rows, np.array([0]), lambda rows: [np.array([0])], ks=(1,))
  assert m["hr_at_1"] == 1.0 and m["ndcg_at_10"] == 1.0


def test_ties_count_as_broken_at_random():
  tied = np.array([[0.9, 0.5, 0.5, 0.5, 0.1]], dtype=np.float32)  # movie 2: 1 above, 2 tied
  none = lambda rows: [np.array([], int) for _ in rows]
  m = metrics.next_item(lambda rows: tied[np.zeros(len(rows), int)], np.array([2]), none,
                        ks=(1, 2, 3, 4))
  assert m["top_1"] == 0 and m["top_4"] == 1
  assert m["hr_at_2"] == pytest.approx(1 / 3) and m["hr_at_3"] == pytest.approx(2 / 3)
  # Ranks 1, 2, 3 equally likely.
  assert m["ndcg_at_10"] == pytest.approx(sum(1 / math.log2(r + 2) for r in (1, 2, 3)) / 3)
  # A constant scorer (a cold user of a count-based baseline) is not "always right".
  flat = metrics.next_item(lambda rows: np.zeros((len(rows), 5), np.float32), ITEMS, none,
                           ks=(1,))
  assert flat["top_1"] == pytest.approx(1 / 5)
  assert flat["ndcg_at_10"] == pytest.approx(sum(1 / math.log2(r + 2) for r in range(5)) / 5)


def test_ndcg_stops_at_rank_ten():
  scores = np.arange(20, 0, -1, dtype=np.float32)[None]  # movie i at rank i
  none = lambda rows: [np.array([], int) for _ in rows]
  at = lambda movie: metrics.next_item(lambda rows: scores, np.array([movie]), none)
  assert at(9)["ndcg_at_10"] == pytest.approx(1 / math.log2(11))
  assert at(10)["ndcg_at_10"] == 0.0 and at(10)["hr_at_50"] == 1.0


def test_popularity_counts_only_ratings_made_before_each_eval_rating():
  from components.retrieval_evaluator import evaluate  # pylint: disable=g-import-not-at-top
  from components.retrieval_evaluator.eval_set import EvalSet  # pylint: disable=g-import-not-at-top
  # Training ratings (movie, second): movie 0 at 10 and 20, movie 1 at 30, 40 and 50.
  items, seconds = np.array([0, 0, 1, 1, 1]), np.array([10, 20, 30, 40, 50])
  data = EvalSet(catalogue_ids=np.array(["a", "b", "c"]), catalogue_serialized=[],
                 eval_serialized=[], eval_users=np.array([0, 0, 0]), eval_items=np.array([2, 2, 2]),
                 eval_seconds=np.array([30, 10, 51]), user_ids=["u"],
                 user_train_items=[items], user_train_seconds=[seconds],
                 train_items=items, train_seconds=seconds, user_query_serialized=[b""],
                 dropped_eval_rows=0)
  scores = evaluate.popularity_before(data, np.arange(3))
  # At second 30 the rating made at 30 is not yet counted; at 10 nothing is.
  np.testing.assert_array_equal(scores, [[2, 0, 0], [0, 0, 0], [2, 3, 0]])
  assert [list(e) for e in data.seen_before(np.arange(3))] == [[0, 0], [], [0, 0, 1, 1, 1]]
  # The ranking also leaves out what the user rated in the row's own second (movie 1 at
  # 30; movie 0 at 10), which the query above does not see.
  assert [list(e) for e in data.rated_by_then(np.arange(3))] == [
      [0, 0, 1], [0], [0, 0, 1, 1, 1]]


def test_a_movie_rated_in_the_same_second_is_not_a_wrong_answer():
  from components.retrieval_evaluator import evaluate  # pylint: disable=g-import-not-at-top
  from components.retrieval_evaluator.eval_set import EvalSet  # pylint: disable=g-import-not-at-top
  # One user saved movies 1 and 2 in one second (60); movie 2 is the eval rating, movie 1
  # stayed in training. A scorer that ranks 1 then 2 found both picks of that second.
  data = EvalSet(catalogue_ids=np.array(["a", "b", "c", "d"]), catalogue_serialized=[],
                 eval_serialized=[], eval_users=np.array([0]), eval_items=np.array([2]),
                 eval_seconds=np.array([60]), user_ids=["u"],
                 user_train_items=[np.array([0, 1])], user_train_seconds=[np.array([10, 60])],
                 train_items=np.array([0, 1]), train_seconds=np.array([10, 60]),
                 user_query_serialized=[b""], dropped_eval_rows=0)
  scores = lambda rows: np.array([[0.9, 0.8, 0.7, 0.1]], np.float32)[np.zeros(len(rows), int)]
  m = evaluate.evaluate_scores(data, scores)
  assert m["hr_at_1"] == 1.0 and m["ndcg_at_10"] == 1.0
  assert m["top_1"] == 0.0  # nothing removed: 0 and 1 above it
  assert [list(e) for e in data.seen_before(np.arange(1))] == [[0]]
