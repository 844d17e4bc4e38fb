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
SEEN = [np.array([0]), np.array([4, 3])]  # movies each user rated in training
# Eval rows: (user, movie).
USERS = np.array([0, 0, 1])
ITEMS = np.array([2, 4, 0])


def score_rows(rows):
  return SCORES[USERS[rows]]


def test_factorized_top_k_all_items_and_unseen():
  m = metrics.factorized_top_k(score_rows, ITEMS, USERS, SEEN, ks=(1, 2, 3))
  # All items: ranks are movie 2 of user 0 -> 2, movie 4 of user 0 -> 4, movie 0 of user 1 -> 4.
  assert m["top_1"] == 0 and m["top_2"] == 0
  assert m["top_3"] == pytest.approx(1 / 3)
  # Unseen: user 0 loses movie 0 -> ranks 1 and 3; user 1 loses 4 and 3 -> rank 2.
  assert m["top_1_unseen"] == 0
  assert m["top_2_unseen"] == pytest.approx(1 / 3)
  assert m["top_3_unseen"] == pytest.approx(2 / 3)


def test_the_rated_movie_is_never_masked_even_if_seen_in_training():
  m = metrics.factorized_top_k(score_rows, np.array([0]), np.array([0]), SEEN, ks=(1,))
  assert m["top_1_unseen"] == 1.0  # movie 0 was rated in train and again in eval


def test_ties_count_as_broken_at_random():
  tied = np.array([[0.9, 0.5, 0.5, 0.5, 0.1]], dtype=np.float32)  # movie 2: 1 above, 2 tied
  m = metrics.factorized_top_k(lambda rows: tied[np.zeros(len(rows), int)], np.array([2]),
                               np.array([0]), [np.array([], int)], ks=(1, 2, 3, 4))
  assert m["top_1"] == 0 and m["top_4"] == 1
  assert m["top_2"] == pytest.approx(1 / 3) and m["top_3"] == pytest.approx(2 / 3)
  # A constant scorer (a cold user of a count-based baseline) is not "always right".
  flat = metrics.factorized_top_k(lambda rows: np.zeros((len(rows), 5), np.float32),
                                  ITEMS, USERS, SEEN, ks=(1,))
  assert flat["top_1"] == pytest.approx(1 / 5)


def test_per_user_recall_and_ndcg():
  eval_items = [np.array([2, 4]), np.array([0])]
  m = metrics.per_user(lambda us: SCORES[us], eval_items, SEEN, k=2)
  # user 0: top-2 unseen = [1, 2] -> hits {2}: recall 1/2; DCG = 1/log2(3); IDCG = 1 + 1/log2(3)
  # user 1: top-2 unseen = [2, 1] -> no hit.
  dcg = 1 / math.log2(3)
  assert m["recall_at_2"] == pytest.approx((0.5 + 0.0) / 2)
  assert m["ndcg_at_2"] == pytest.approx((dcg / (1 + dcg) + 0.0) / 2)
  assert m["users_evaluated"] == 2


def test_users_without_eval_items_are_not_averaged_in():
  eval_items = [np.array([1]), np.array([], dtype=np.int64)]
  m = metrics.per_user(lambda us: SCORES[us], eval_items, SEEN, k=1)
  assert m["users_evaluated"] == 1
  assert m["recall_at_1"] == 1.0 and m["ndcg_at_1"] == 1.0
