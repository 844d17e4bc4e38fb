"""Deterministic, MovieLens-shaped synthetic data with real latent structure.

Users and movies get latent taste vectors; users cluster by occupation (and age, zip
prefix), movies' genres and release years follow their vectors, and popularity is skewed.
Who rates what is sampled from softmax(taste + popularity) and ratings follow the
affinity, so retrieval and ranking models have something real to learn. Written in any of
the GroupLens layouts, for fast tests and an offline demo; no GroupLens data is used.
"""

import dataclasses
import os
from typing import List

import numpy as np

from components.movielens_example_gen import layouts

# ml-100k's u.occupation, in file order (21 entries, like the ml-1m codes).
ML_100K_OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment",
    "executive", "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none",
    "other", "programmer", "retired", "salesman", "scientist", "student", "technician",
    "writer")

_FIRST_TIMESTAMP = 874_724_710  # the ml-100k collection period, Sep 1997 ..
_LAST_TIMESTAMP = 893_286_638  # .. Apr 1998


@dataclasses.dataclass
class SyntheticMovieLens:
  movies: List[layouts.Movie]
  users: List[layouts.User]
  occupation_codes: List[int]  # per user, index into the occupation lists
  ratings: List[layouts.Rating]


def generate(n_users: int = 300, n_movies: int = 200, min_ratings: int = 10,
             max_ratings: int = 60, n_factors: int = 6, seed: int = 0) -> SyntheticMovieLens:
  """Users, movies and ratings drawn from a seeded latent-factor model."""
  rng = np.random.default_rng(seed)
  genres = layouts.ML_100K_GENRES[1:]  # not "unknown"
  factor_genre = [genres[(3 * f) % len(genres)] for f in range(n_factors)]

  movie_vecs = rng.normal(size=(n_movies, n_factors))
  popularity = rng.normal(scale=1.0, size=n_movies)
  years = np.clip(np.round(1985 + 6 * movie_vecs[:, 0] + rng.normal(scale=3, size=n_movies)),
                  1930, 1998).astype(int)
  movies = []
  for i in range(n_movies):
    top = [factor_genre[f] for f in np.argsort(-movie_vecs[i])[:2] if movie_vecs[i, f] > 0.3]
    movie_genres = tuple(sorted(set(top or [factor_genre[int(np.argmax(movie_vecs[i]))]])))
    title = f"Synthetic {movie_genres[0]} Film {i + 1} ({years[i]})"
    movies.append(layouts.Movie(str(i + 1), title, movie_genres, int(years[i])))

  n_clusters = len(ML_100K_OCCUPATIONS)
  centres = rng.normal(size=(n_clusters, n_factors))
  clusters = rng.integers(0, n_clusters, size=n_users)
  user_vecs = centres[clusters] + 0.6 * rng.normal(size=(n_users, n_factors))
  ages = np.clip(np.round(33 + 10 * np.tanh(user_vecs[:, 1]) + rng.normal(scale=4, size=n_users)),
                 7, 73).astype(int)
  users = [layouts.User(str(u + 1), int(ages[u]),
                        "M" if user_vecs[u, 2] + rng.normal(scale=0.5) > 0 else "F",
                        ML_100K_OCCUPATIONS[clusters[u]], f"{10 + clusters[u]:02d}{u % 1000:03d}")
           for u in range(n_users)]

  ratings = []
  for u in range(n_users):
    # One user's row at a time: the whole users x movies matrix is 83 GiB at 10M ratings.
    affinity = user_vecs[u] @ movie_vecs.T / np.sqrt(n_factors)  # [movies]
    k = int(rng.integers(min_ratings, max_ratings + 1))
    k = min(k, n_movies)
    # Gumbel top-k: k movies without replacement, probability ~ exp(2*affinity + popularity),
    # best first (argpartition, then the k sorted: a full argsort per user was most of
    # the time at 39,000 movies).
    scores = 2.0 * affinity + popularity + rng.gumbel(size=n_movies)
    top_k = np.argpartition(-scores, k - 1)[:k]
    chosen = top_k[np.argsort(-scores[top_k])]
    start = rng.integers(_FIRST_TIMESTAMP, _LAST_TIMESTAMP - 86_400 * 30)
    stamps = np.sort(start + rng.integers(0, 86_400 * 30, size=k))
    for movie, stamp in zip(chosen, stamps):
      value = 2.3 + 1.1 * affinity[movie] + 0.2 * popularity[movie] + rng.normal(scale=0.7)
      ratings.append(layouts.Rating(str(u + 1), str(movie + 1),
                                    float(np.clip(np.round(value), 1, 5)), int(stamp)))
  return SyntheticMovieLens(movies, users, [int(c) for c in clusters], ratings)


def write(data: SyntheticMovieLens, out_dir: str, layout: str = "ml-100k") -> str:
  """Writes `data` as the files of `layout` into `out_dir`; returns `out_dir`."""
  if layout not in layouts.LAYOUTS:
    raise ValueError(f"layout {layout!r} is not one of {sorted(layouts.LAYOUTS)}.")
  os.makedirs(out_dir, exist_ok=True)
  layouts.LAYOUTS[layout].write(data, out_dir)
  return out_dir


def write_synthetic_movielens(out_dir: str, layout: str = "ml-100k", **kwargs) -> str:
  """generate(**kwargs) written as `layout` files in `out_dir`."""
  return write(generate(**kwargs), out_dir, layout)
