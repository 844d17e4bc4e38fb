"""Features a second stage could add to a (user, time, candidate) beyond the two towers.

Measured by bench/ranking_quality.py, which trains a list-wise re-ranker on them (pure
numpy here; see BENCHMARKS.md "Ranking" for what each brought: on ml-100k, nothing that
survived to the eval rows).

Causality is the invariant, as for the query tower's histories: a feature of a query at
time t reads only ratings made strictly before t: the user's own (their history) and
everybody's (the rating log: popularity, a movie's age and mean rating as they stood at
t). Nothing here depends on a dataset's size or dates: counts are shares of the
window's ratings, times are relative to t, and the windows are an hour, a day, a week
and a month (units of human activity, not fitted constants).

Per candidate, in FEATURES order:
  retrieval_score        the two-tower score (cosine / temperature)
  retrieval_rank         log(1 + rank) in the retrieved list
  popularity_{1h,1d,7d,30d,all}
                         log share of the window's ratings before t that were of this
                         movie: log(1 + count) - log(1 + all ratings in the window)
  movie_age              log(1 + days since the movie's first rating), 0 if none yet
  movie_mean_rating      its mean rating before t, shrunk towards the mean of all
                         ratings before t (5 pseudo-ratings)
  genre_affinity         share of the user's earlier ratings in the candidate's genres
  recent_genre_affinity  the same over their 10 newest
  similarity_last        cosine of the candidate's retrieval embedding with the user's
                         newest earlier movie's, and the mean over the 5 newest
  similarity_recent
  year_gap               |release year - mean release year of the user's movies| / 10
  user_ratings           log(1 + the user's earlier ratings)
  user_gap               log(1 + days since the user's newest earlier rating)
  follows_last           log(1 + how often users rated the candidate within 3 ratings
                         after the user's newest earlier movie), before t
  follows_recent         the same, mean over the user's 5 newest earlier movies
"""

import dataclasses
from typing import List, Sequence, Tuple

import numpy as np

SECONDS_PER_DAY = 86400
POPULARITY_WINDOWS = {"1h": 3600, "1d": SECONDS_PER_DAY, "7d": 7 * SECONDS_PER_DAY,
                      "30d": 30 * SECONDS_PER_DAY}
RECENT_GENRES = 10  # newest earlier ratings of recent_genre_affinity
RECENT_SIMILAR = 5  # newest earlier movies of similarity_recent
PRIOR_RATINGS = 5.0  # pseudo-ratings shrinking a movie's mean rating towards everybody's

FEATURES = (
    "retrieval_score", "retrieval_rank",
    *(f"popularity_{w}" for w in POPULARITY_WINDOWS), "popularity_all",
    "movie_age", "movie_mean_rating",
    "genre_affinity", "recent_genre_affinity",
    "similarity_last", "similarity_recent",
    "year_gap", "user_ratings", "user_gap",
    "follows_last", "follows_recent",
)
NUM_FEATURES = len(FEATURES)


@dataclasses.dataclass
class Catalogue:
  """Movie attributes by catalogue index (the retrieval index's order)."""
  genres: np.ndarray  # [M, G] float32 multi-hot
  years: np.ndarray  # [M] float32, nan when unknown
  embeddings: np.ndarray  # [M, d] float32 retrieval candidate embeddings, L2-normalised

  @classmethod
  def build(cls, genres: Sequence[Sequence[str]], years: Sequence, embeddings: np.ndarray):
    names = sorted({g for movie in genres for g in movie})
    column = {g: i for i, g in enumerate(names)}
    multi_hot = np.zeros((len(genres), max(len(names), 1)), np.float32)
    for row, movie in enumerate(genres):
      multi_hot[row, [column[g] for g in movie]] = 1.0
    years = np.array([float(y) if y else np.nan for y in years], np.float32)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return cls(multi_hot, years, (embeddings / np.maximum(norms, 1e-12)).astype(np.float32))


class RatingLog:
  """Everybody's ratings (catalogue index, unix seconds, stars), for counts before t."""

  def __init__(self, movies: np.ndarray, seconds: np.ndarray, stars: np.ndarray,
               num_movies: int):
    movies = np.asarray(movies, np.int64)
    seconds = np.asarray(seconds, np.int64)
    stars = np.asarray(stars, np.float64)
    order = np.lexsort((seconds, movies))
    self.keys = (movies[order] << 32) | seconds[order]  # seconds < 2**32 (until 2106)
    self.starts = np.searchsorted(movies[order], np.arange(num_movies + 1))
    self.star_sums = np.concatenate([[0.0], np.cumsum(stars[order])])
    rated = self.starts[1:] > self.starts[:-1]
    self.first_seconds = np.zeros(num_movies, np.int64)  # of each movie's first rating
    self.first_seconds[rated] = seconds[order][self.starts[:-1][rated]]
    by_time = np.argsort(seconds, kind="stable")
    self.all_seconds = seconds[by_time]
    self.all_star_sums = np.concatenate([[0.0], np.cumsum(stars[by_time])])

  def _before(self, movies: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Positions in `keys` of each movie's first rating at or after `seconds`."""
    return np.searchsorted(self.keys, (movies << 32) | np.maximum(seconds, 0), side="left")

  def counts(self, movies: np.ndarray, before: np.ndarray, since=None) -> np.ndarray:
    """Ratings of `movies` made in [since, before) (since None: ever)."""
    end = self._before(movies, before)
    start = self.starts[movies] if since is None else self._before(movies, since)
    return end - start

  def total(self, before: np.ndarray, since=None) -> np.ndarray:
    end = np.searchsorted(self.all_seconds, before, side="left")
    return end - (0 if since is None else np.searchsorted(self.all_seconds, since, side="left"))

  def mean_rating(self, movies: np.ndarray, before: np.ndarray) -> np.ndarray:
    end = self._before(movies, before)
    count = end - self.starts[movies]
    sums = self.star_sums[end] - self.star_sums[self.starts[movies]]
    everybody_end = np.searchsorted(self.all_seconds, before, side="left")
    prior = np.where(everybody_end > 0,
                     self.all_star_sums[everybody_end] / np.maximum(everybody_end, 1), 0.0)
    return (sums + PRIOR_RATINGS * prior) / (count + PRIOR_RATINGS)


class TransitionLog:
  """Which movie users rated soon after which: pairs (a, b) of one user's ratings with b
  among the `window` ratings after a, stamped with b's time, for counts before t."""

  def __init__(self, user_items: Sequence[np.ndarray], user_seconds: Sequence[np.ndarray],
               num_movies: int, window: int = 3):
    firsts, seconds_, times = [], [], []
    for items, seconds in zip(user_items, user_seconds):  # each oldest first
      for gap in range(1, window + 1):
        if len(items) > gap:
          firsts.append(items[:-gap]); seconds_.append(items[gap:]); times.append(seconds[gap:])
    first = np.concatenate(firsts).astype(np.int64) if firsts else np.zeros(0, np.int64)
    then = np.concatenate(seconds_).astype(np.int64) if firsts else np.zeros(0, np.int64)
    when = np.concatenate(times).astype(np.int64) if firsts else np.zeros(0, np.int64)
    self.num_movies = num_movies
    pair = first * num_movies + then
    order = np.lexsort((when, pair))
    self.keys = (pair[order] << 32) | when[order]

  def counts(self, first: np.ndarray, then: np.ndarray, before: np.ndarray) -> np.ndarray:
    """How often `then` followed `first` in ratings made strictly before `before`."""
    pair = np.asarray(first, np.int64) * self.num_movies + np.asarray(then, np.int64)
    return (np.searchsorted(self.keys, (pair << 32) | before, side="left") -
            np.searchsorted(self.keys, pair << 32, side="left"))


History = Tuple[np.ndarray, np.ndarray]  # (catalogue indices, seconds), oldest first


def features(log: RatingLog, transitions: TransitionLog, catalogue: Catalogue,
             histories: Sequence[History], times: np.ndarray, candidates: np.ndarray,
             scores: np.ndarray) -> np.ndarray:
  """[n, K, NUM_FEATURES] float32 for n queries of K candidates each.

  histories[i]: the user's ratings made strictly before times[i] (the caller cuts them);
  candidates [n, K] catalogue indices in retrieval order; scores [n, K] retrieval scores.
  """
  n, k = candidates.shape
  times = np.asarray(times, np.int64)
  t = np.repeat(times, k).reshape(n, k)
  flat, flat_t = candidates.reshape(-1), t.reshape(-1)
  out = np.zeros((n, k, NUM_FEATURES), np.float32)
  put = lambda name, value: out.__setitem__((..., FEATURES.index(name)), value)
  put("retrieval_score", scores)
  put("retrieval_rank", np.log1p(np.broadcast_to(np.arange(k), (n, k))))
  for name, width in [*POPULARITY_WINDOWS.items(), ("all", None)]:
    since = None if width is None else flat_t - width
    count = log.counts(flat, flat_t, since).reshape(n, k)
    total = log.total(times, None if width is None else times - width)
    put(f"popularity_{name}", np.log1p(count) - np.log1p(total)[:, None])
  rated_before = log.counts(flat, flat_t).reshape(n, k) > 0
  age_days = (t - log.first_seconds[candidates]) / SECONDS_PER_DAY
  put("movie_age", np.where(rated_before, np.log1p(np.maximum(age_days, 0)), 0.0))
  put("movie_mean_rating", log.mean_rating(flat, flat_t).reshape(n, k))

  genres = catalogue.genres[candidates]  # [n, K, G]
  genre_counts = np.maximum(genres.sum(-1), 1.0)
  years = catalogue.years[candidates]
  for i, (items, seconds) in enumerate(histories):
    if not len(items):
      continue
    profile = catalogue.genres[items].mean(0)
    recent = catalogue.genres[items[-RECENT_GENRES:]].mean(0)
    out[i, :, FEATURES.index("genre_affinity")] = genres[i] @ profile / genre_counts[i]
    out[i, :, FEATURES.index("recent_genre_affinity")] = genres[i] @ recent / genre_counts[i]
    similarity = catalogue.embeddings[candidates[i]] @ catalogue.embeddings[
        items[-RECENT_SIMILAR:]].T  # [K, <=5], newest last
    out[i, :, FEATURES.index("similarity_last")] = similarity[:, -1]
    out[i, :, FEATURES.index("similarity_recent")] = similarity.mean(1)
    history_years = catalogue.years[items]
    if np.isfinite(history_years).any():
      gap = np.abs(years[i] - np.nanmean(history_years)) / 10.0
      out[i, :, FEATURES.index("year_gap")] = np.nan_to_num(gap, nan=0.0)
    out[i, :, FEATURES.index("user_ratings")] = np.log1p(len(items))
    out[i, :, FEATURES.index("user_gap")] = np.log1p(
        max(times[i] - int(seconds[-1]), 0) / SECONDS_PER_DAY)
    follows = np.log1p(np.stack([
        transitions.counts(np.full(k, first), candidates[i], np.full(k, times[i]))
        for first in items[-RECENT_SIMILAR:][::-1]], axis=1))  # [K, <=5], newest first
    out[i, :, FEATURES.index("follows_last")] = follows[:, 0]
    out[i, :, FEATURES.index("follows_recent")] = follows.mean(1)
  return out


def cut_histories(user_items: List[np.ndarray], user_seconds: List[np.ndarray],
                  users: np.ndarray, times: np.ndarray) -> List[History]:
  """Each query's history: its user's ratings (oldest first) made strictly before it,
  cut as the RetrievalEvaluator cuts its queries' histories."""
  from components.retrieval_evaluator import eval_set  # pylint: disable=g-import-not-at-top
  items = eval_set.user_items_until(user_items, user_seconds, users, times, "left")
  seconds = eval_set.user_items_until(user_seconds, user_seconds, users, times, "left")
  return list(zip(items, seconds))


def newest_with_gaps(histories: List[History], times: np.ndarray, pad: int, length: int):
  """([rows, length] each history's newest movies, newest first, padded with `pad`;
  [rows, length] log(1 + days) from each to the row's time), of histories as
  cut_histories cuts them."""
  ids = np.full((len(histories), length), pad, np.int32)
  gaps = np.zeros((len(histories), length), np.float32)
  for row, ((items, seconds), t) in enumerate(zip(histories, times)):
    items, seconds = items[-length:][::-1], seconds[-length:][::-1]
    ids[row, :len(items)] = items
    gaps[row, :len(items)] = np.log1p(np.maximum(t - seconds, 0) / SECONDS_PER_DAY)
  return ids, gaps
