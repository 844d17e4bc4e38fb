"""Predicted ratings on the bundle's TensorFlow Lite rating core (`ranking_model.tflite`).

The rating model's inputs are Transform's features of the movie and of the user at the
query's time, each made row by row. So each catalogue movie's and each known user's (as
of their default query: their last rating's time) are computed once, when the bundle
loads, by the ranking SavedModel's own `transform_features` signature. A request then
gathers rows and runs the core: ~0.1 ms for 10 movies, against ~2.3 ms through the
`serve_features` graph (BENCHMARKS.md, "Serving the second stage within issue 12's
budget"). A request that changes the user's features or time is rated by that graph
(serving/recommender.py).
"""

import json
import os
from typing import Dict, List, Mapping, Sequence

import numpy as np
import tensorflow as tf

from modules import features as F
from modules import ranking_model
from modules import tflite_runner

_BATCH = 1024  # examples transformed per call at load
_PLACEHOLDER_RATING = 0.0  # the label is parsed with the rest; its value is not used


def _feature(values) -> tf.train.Feature:
  if isinstance(values[0], (int, np.integer)):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
  if isinstance(values[0], float):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))


def _example(raw: Mapping) -> bytes:
  """A serialized tf.Example of raw features (scalars or lists; empty ones left out,
  as a movie without genres or year is in the data)."""
  features = {}
  for name, value in raw.items():
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if values:
      features[name] = _feature(values)
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def movie_raw(candidate: Mapping) -> Dict:
  """A catalogue entry (bundle/scann_index.py) as the ranking model's raw movie features;
  an unknown year (None or 0) is left out."""
  return {F.MOVIE_ID: candidate["movie_id"], F.MOVIE_TITLE: candidate["title"],
          F.MOVIE_GENRES: list(candidate["genres"]),
          F.MOVIE_RELEASE_YEAR: [int(candidate["year"])] if candidate["year"] else []}


class LiteRatings:
  """Ratings of catalogue rows for known users' default queries, on TensorFlow Lite."""

  def __init__(self, ranking_dir: str, tflite_path: str, transform, candidates: Sequence[Mapping],
               users: Mapping[str, Mapping]):
    """`transform`: the ranking SavedModel's `transform_features` signature; `users`:
    {user id: the raw user features of their default query (id, demographics, time)}."""
    with open(os.path.join(ranking_dir, ranking_model.CORE_DIR,
                           ranking_model.CORE_INFO_FILE)) as f:
      core = json.load(f)
    names, self._num_genres = core["inputs"], core["num_genres"]
    movie_names = [n for n in names if n in ranking_model.MOVIE_CORE_INPUTS]
    user_names = [n for n in names if n not in ranking_model.MOVIE_CORE_INPUTS]
    any_user = next(iter(users.values()), None)
    any_movie = movie_raw(candidates[0]) if candidates else None
    self.movies = self._columns(transform, [{**any_user, **movie_raw(c)} for c in candidates],
                                movie_names) if any_user else {}
    self._user_rows = {user: row for row, user in enumerate(users)}
    self.users = self._columns(transform, [{**raw, **any_movie} for raw in users.values()],
                               user_names) if any_movie else {}
    self._core = tflite_runner.TfliteRunner(tflite_path)

  def _columns(self, transform, rows: List[Dict], names: List[str]) -> Dict[str, np.ndarray]:
    """{core input: [rows, ...]} of raw feature rows, through Transform."""
    parts: Dict[str, List[np.ndarray]] = {name: [] for name in names}
    for start in range(0, len(rows), _BATCH):
      examples = [_example({**row, F.USER_RATING: _PLACEHOLDER_RATING})
                  for row in rows[start:start + _BATCH]]
      transformed = transform(examples=tf.constant(examples))
      inputs = ranking_model.core_inputs(transformed, names, self._num_genres)
      for name in names:
        parts[name].append(inputs[name].numpy())
    return {name: np.concatenate(p) for name, p in parts.items()}

  def predict(self, user_id: str, rows: Sequence[int]) -> np.ndarray:
    """Predicted ratings [n] of catalogue rows for a known user's default query."""
    rows = np.asarray(rows, np.int64)
    user = self._user_rows[user_id]
    inputs = {name: column[rows] for name, column in self.movies.items()}
    inputs.update({name: np.repeat(column[user:user + 1], len(rows), axis=0)
                   for name, column in self.users.items()})
    return self._core(**inputs)[F.RATING_OUTPUT].reshape(-1)
