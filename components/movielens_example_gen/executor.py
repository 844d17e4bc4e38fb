"""MovieLensExampleGen executor: GroupLens files -> ratings and catalogue tf.Examples.

Movies and users are small and are read (and validated) in the executor; ratings stream
through Apache Beam, one reader per ratings file, so that every bad row is reported with
its file and line. Ratings are joined with their movie and user, split train/eval, and
written as gzipped TFRecords in TFX's usual `Split-<name>/` folders.
"""

import json
import logging
import os
from typing import Any, Dict, Iterator, List, Optional

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
import tensorflow as tf
from tfx import types
from tfx.components.example_gen import write_split
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.utils import proto_utils

from components.movielens_example_gen import layouts
from components.movielens_example_gen import splits
from modules import features as F

EXAMPLES_KEY = "examples"
CANDIDATES_KEY = "candidates"

SPLIT_LAST, SPLIT_RANDOM, SPLIT_TEMPORAL, SPLIT_METHODS = (
    splits.SPLIT_LAST, splits.SPLIT_RANDOM, splits.SPLIT_TEMPORAL, splits.SPLIT_METHODS)

_METRICS_NAMESPACE = "MovieLensExampleGen"
_SKIPPED_PREFIX = "skipped:"


def data_dir_from(exec_properties: Dict[str, Any]) -> str:
  """The directory of the (span-resolved) data files the driver matched."""
  input_config = example_gen_pb2.Input()
  proto_utils.json_to_proto(exec_properties["input_config"], input_config)
  pattern = input_config.splits[0].pattern
  return os.path.dirname(os.path.join(exec_properties["input_base"], pattern))


def _bytes(values) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(
      value=[v.encode("utf-8") for v in values]))


def _ints(values) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _floats(values) -> tf.train.Feature:
  return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def movie_features(movie: layouts.Movie) -> Dict[str, tf.train.Feature]:
  feats = {
      F.MOVIE_ID: _bytes([movie.movie_id]),
      F.MOVIE_TITLE: _bytes([movie.title]),
      F.MOVIE_GENRES: _bytes(movie.genres),
  }
  if movie.release_year is not None:
    feats[F.MOVIE_RELEASE_YEAR] = _ints([movie.release_year])
  return feats


def rating_example(rating: layouts.Rating, movie: layouts.Movie,
                   user: Optional[layouts.User]) -> tf.train.Example:
  feats = movie_features(movie)
  feats[F.USER_ID] = _bytes([rating.user_id])
  feats[F.USER_RATING] = _floats([rating.rating])
  feats[F.TIMESTAMP] = _ints([rating.timestamp])
  if user is not None:
    feats[F.USER_AGE] = _ints([user.age])
    feats[F.USER_GENDER] = _bytes([user.gender])
    feats[F.USER_OCCUPATION] = _bytes([user.occupation])
    feats[F.USER_ZIP_CODE] = _bytes([user.zip_code])
  return tf.train.Example(features=tf.train.Features(feature=feats))


class _ReadRatings(beam.DoFn):
  """Streams one ratings file; raises on a bad row, or skips and counts it."""

  def __init__(self, layout_name: str, movies, users, skip_bad_rows: bool):
    super().__init__()
    self._layout_name = layout_name
    self._movies = movies
    self._users = users
    self._skip = skip_bad_rows

  def process(self, data_dir: str) -> Iterator[layouts.Rating]:
    bad_rows = layouts.BadRows(skip=self._skip)
    yield from layouts.read_ratings(layouts.LAYOUTS[self._layout_name], data_dir,
                                    self._movies, self._users, bad_rows)
    for (file_name, reason), count in bad_rows.skipped.items():
      beam.metrics.Metrics.counter(
          _METRICS_NAMESPACE, f"{_SKIPPED_PREFIX}{file_name}:{reason}").inc(count)
    if bad_rows.total:
      logging.warning("MovieLensExampleGen: %s", bad_rows.summary())


class _ToExample(beam.DoFn):
  """Joins a rating with its movie and user, counting examples per split."""

  def __init__(self, movies, users):
    super().__init__()
    self._movies = movies
    self._users = users

  def process(self, rating: layouts.Rating) -> Iterator[tf.train.Example]:
    yield rating_example(rating, self._movies[rating.movie_id],
                         self._users.get(rating.user_id))


def _temporal_cutoff(ratings: beam.PCollection, train_fraction: float) -> beam.pvalue.AsSingleton:
  """The timestamp below which `train_fraction` of the ratings fall (global quantile)."""
  return beam.pvalue.AsSingleton(
      ratings
      | "Timestamps" >> beam.Map(lambda r: r.timestamp)
      | "Quantiles" >> beam.ApproximateQuantiles.Globally(101)
      # No ratings: no quantiles; the empty splits are reported by Executor._record.
      | "Cutoff" >> beam.Map(lambda q: q[round(train_fraction * 100)] if q else 0))


class Executor(base_beam_executor.BaseBeamExecutor):
  """Reads a GroupLens MovieLens directory; writes ratings and catalogue Examples."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    layout = layouts.LAYOUTS[exec_properties["layout"]]
    data_dir = data_dir_from(exec_properties)
    split_method = exec_properties["split_method"]
    train_fraction = float(exec_properties["train_fraction"])
    seed = int(exec_properties["split_seed"])
    cutoff = int(exec_properties.get("temporal_cutoff") or 0)
    eval_per_user = int(exec_properties.get("eval_per_user") or 1)
    skip = bool(exec_properties.get("skip_bad_rows"))
    if split_method not in SPLIT_METHODS:
      raise ValueError(f"split_method {split_method!r} is not one of {SPLIT_METHODS}.")

    bad_rows = layouts.BadRows(skip=skip)
    movies = layouts.read_movies(layout, data_dir, bad_rows)
    users = layouts.read_users(layout, data_dir, bad_rows)
    logging.info("MovieLensExampleGen: %s layout in %s: %d movies, %d users with "
                 "demographics", layout.name, data_dir, len(movies), len(users))

    examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
    candidates = artifact_utils.get_single_instance(output_dict[CANDIDATES_KEY])
    rating_splits = [F.TRAIN_SPLIT, F.EVAL_SPLIT]
    examples.split_names = artifact_utils.encode_split_names(rating_splits)
    candidates.split_names = artifact_utils.encode_split_names([F.CATALOG_SPLIT])
    file_format = example_gen_pb2.FORMAT_TFRECORDS_GZIP

    def write(pcoll, artifact, split, label):
      return pcoll | f"Write[{label}]" >> write_split.WriteSplit(
          artifact_utils.get_split_uri([artifact], split), file_format, exec_properties)

    pipeline = self._make_beam_pipeline()
    ratings = (pipeline
               | "DataDir" >> beam.Create([data_dir])
               | "ReadRatings" >> beam.ParDo(_ReadRatings(layout.name, movies, users, skip))
               | "Reshuffle" >> beam.Reshuffle())
    if split_method == SPLIT_LAST:
      # Each user's eval_per_user + 1 newest ratings (a combiner: no per-user grouping of
      # every rating), then a partition of the ratings against them as a side input.
      newest = beam.pvalue.AsDict(
          ratings
          | "OrderKeys" >> beam.Map(lambda r: (r.user_id, splits.rating_order(r)))
          | "NewestPerUser" >> beam.combiners.Top.LargestPerKey(eval_per_user + 1))
      train, eval_ = ratings | "Split" >> beam.Partition(
          lambda r, n, newest: int(splits.last_is_eval(r, newest[r.user_id], eval_per_user)),
          2, newest)
    elif split_method == SPLIT_RANDOM:
      train, eval_ = ratings | "Split" >> beam.Partition(
          lambda r, n: 0 if splits.random_split_is_train(r, seed, train_fraction) else 1, 2)
    else:
      cutoff_side = (beam.pvalue.AsSingleton(pipeline | "GivenCutoff" >> beam.Create([cutoff]))
                     if cutoff else _temporal_cutoff(ratings, train_fraction))
      train, eval_ = ratings | "Split" >> beam.Partition(
          lambda r, n, c: 0 if r.timestamp < c else 1, 2, cutoff_side)
      if not cutoff:  # record the derived cutoff for the artifact's properties
        _ = cutoff_side.pvalue | "RecordCutoff" >> beam.Map(
            lambda c: beam.metrics.Metrics.distribution(
                _METRICS_NAMESPACE, "temporal_cutoff").update(c))
    for split, pcoll in ((F.TRAIN_SPLIT, train), (F.EVAL_SPLIT, eval_)):
      counted = pcoll | f"Count[{split}]" >> beam.Map(_count, f"examples:{split}")
      write(counted | f"ToExample[{split}]" >> beam.ParDo(_ToExample(movies, users)),
            examples, split, split)
    catalogue = (pipeline
                 | "Movies" >> beam.Create(sorted(movies.values(), key=lambda m: m.movie_id))
                 | "MovieToExample" >> beam.Map(
                     lambda m: tf.train.Example(features=tf.train.Features(
                         feature=movie_features(m)))))
    write(catalogue, candidates, F.CATALOG_SPLIT, "candidates")

    result = pipeline.run()
    result.wait_until_finish()
    metrics = result.metrics().query(MetricsFilter().with_namespace(_METRICS_NAMESPACE))
    counters = {c.key.metric.name: c.committed for c in metrics["counters"]}
    for dist in metrics["distributions"]:
      if dist.key.metric.name == "temporal_cutoff" and dist.committed:
        cutoff = int(dist.committed.max)

    for artifact in (examples, candidates):
      examples_utils.set_payload_format(artifact, example_gen_pb2.FORMAT_TF_EXAMPLE)
      examples_utils.set_file_format(artifact, write_split.to_file_format_str(file_format))
    self._record(examples, candidates, counters, bad_rows, layout, data_dir, users,
                 movies, split_method, cutoff, eval_per_user)

  def _record(self, examples, candidates, counters, bad_rows, layout, data_dir, users,
              movies, split_method, cutoff, eval_per_user) -> None:
    """Checks the splits are usable and records counts on the artifacts."""
    n_train = counters.get(f"examples:{F.TRAIN_SPLIT}", 0)
    n_eval = counters.get(f"examples:{F.EVAL_SPLIT}", 0)
    if not n_train and not n_eval:
      raise layouts.MovieLensDataError(
          f"{layout.path(data_dir, layout.ratings_file)}: no ratings could be read; expected "
          "at least one rating per line (user id, movie id, rating, timestamp)" +
          (f" ({bad_rows.total} bad rows skipped)" if bad_rows.total else "") + ".")
    if not n_train or not n_eval:
      raise layouts.MovieLensDataError(
          f"{data_dir}: the {split_method} split left {n_train} train and {n_eval} eval "
          "ratings; expected both to be non-empty (check train_fraction / temporal_cutoff / "
          "eval_per_user: a user needs more ratings than eval_per_user to be evaluated).")
    skipped = dict(bad_rows.skipped)
    for name, count in counters.items():
      if name.startswith(_SKIPPED_PREFIX):
        file_name, reason = name[len(_SKIPPED_PREFIX):].rsplit(":", 1)
        skipped[(file_name, reason)] = skipped.get((file_name, reason), 0) + count
    total_skipped = sum(skipped.values())
    examples.set_string_custom_property("movielens_layout", layout.name)
    examples.set_int_custom_property("has_user_demographics", int(bool(users)))
    examples.set_int_custom_property(f"num_examples_{F.TRAIN_SPLIT}", n_train)
    examples.set_int_custom_property(f"num_examples_{F.EVAL_SPLIT}", n_eval)
    examples.set_string_custom_property("split_method", split_method)
    if split_method == SPLIT_LAST:
      examples.set_int_custom_property("eval_per_user", eval_per_user)
    examples.set_int_custom_property("skipped_rows", total_skipped)
    examples.set_string_custom_property(
        "skipped_rows_detail", json.dumps({f"{f}:{r}": n for (f, r), n in skipped.items()}))
    if cutoff:
      examples.set_int_custom_property("temporal_cutoff", cutoff)
    candidates.set_string_custom_property("movielens_layout", layout.name)
    candidates.set_int_custom_property(f"num_examples_{F.CATALOG_SPLIT}", len(movies))
    if total_skipped:
      logging.warning("MovieLensExampleGen skipped %d bad rows: %s", total_skipped, skipped)
    logging.info("MovieLensExampleGen wrote %d train / %d eval ratings and %d movies.",
                 n_train, n_eval, len(movies))


def _count(element, counter_name: str):
  beam.metrics.Metrics.counter(_METRICS_NAMESPACE, counter_name).inc()
  return element
