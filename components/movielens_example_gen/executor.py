"""MovieLensExampleGen executor: GroupLens files -> ratings and catalogue tf.Examples.

Movies and users are small and are read (and validated) in the executor; ratings stream
through Apache Beam in batches, one reader per ratings file, so that every bad row is
reported with its file and line. Ratings are joined with their movie and user (encoding.py),
split train/eval, and written as gzipped TFRecords in TFX's usual `Split-<name>/` folders.
"""

import heapq
import itertools
import json
import logging
import os
import pickle
from typing import Any, Dict, Iterator, List, Optional, Tuple

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from tfx import types
from tfx.components.example_gen import write_split
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.utils import proto_utils

from components.movielens_example_gen import encoding
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


# Ratings move through Beam in batches of this many: Beam's cost per element (a few
# microseconds per transform in the DirectRunner) was most of this component's time.
RATINGS_PER_BATCH = 10_000


class _RatingBatch(list):
  """A batch of layouts.Rating. Not a plain list, so that Beam's coder pickles a batch in
  one call instead of encoding a list element by element (a pickle per rating)."""


class _WithCatalogue(beam.DoFn):
  """A DoFn that needs the movies and users: they travel to the workers as one pickle
  (Beam serializes DoFns with dill's pure-Python pickler, which took seconds over tens
  of thousands of users)."""

  def __init__(self, movies, users):
    super().__init__()
    self._catalogue = pickle.dumps((movies, users), protocol=pickle.HIGHEST_PROTOCOL)
    self._movies = self._users = None

  def setup(self):
    self._movies, self._users = pickle.loads(self._catalogue)


class _ReadRatings(_WithCatalogue):
  """Streams one ratings file in batches; raises on a bad row, or skips and counts it."""

  def __init__(self, layout_name: str, movies, users, skip_bad_rows: bool):
    super().__init__(movies, users)
    self._layout_name = layout_name
    self._skip = skip_bad_rows

  def process(self, data_dir: str) -> Iterator[_RatingBatch]:
    bad_rows = layouts.BadRows(skip=self._skip)
    ratings = layouts.read_ratings(layouts.LAYOUTS[self._layout_name], data_dir,
                                   self._movies, self._users, bad_rows)
    while True:
      batch = _RatingBatch(itertools.islice(ratings, RATINGS_PER_BATCH))
      if not batch:
        break
      yield batch
    for (file_name, reason), count in bad_rows.skipped.items():
      beam.metrics.Metrics.counter(
          _METRICS_NAMESPACE, f"{_SKIPPED_PREFIX}{file_name}:{reason}").inc(count)
    if bad_rows.total:
      logging.warning("MovieLensExampleGen: %s", bad_rows.summary())


class _NewestPerUser(beam.CombineFn):
  """Each user's `n` largest splits.rating_order keys, largest first, over all batches
  (a dict the size of the users, not of the ratings)."""

  def __init__(self, n: int):
    super().__init__()
    self._n = n

  def create_accumulator(self) -> Dict[str, list]:
    return {}

  def _push(self, heap: list, key) -> None:
    if len(heap) < self._n:
      heapq.heappush(heap, key)
    elif key > heap[0]:
      heapq.heapreplace(heap, key)

  def add_input(self, newest, batch):
    for rating in batch:
      self._push(newest.setdefault(rating.user_id, []), splits.rating_order(rating))
    return newest

  def merge_accumulators(self, accumulators):
    accumulators = iter(accumulators)
    merged = next(accumulators)
    for newest in accumulators:
      for user_id, keys in newest.items():
        heap = merged.setdefault(user_id, [])
        for key in keys:
          self._push(heap, key)
    return merged

  def extract_output(self, newest) -> Dict[str, list]:
    return {user_id: sorted(keys, reverse=True) for user_id, keys in newest.items()}


class _SplitAndEncode(_WithCatalogue):
  """Serializes each rating of a batch (joined with its movie and user) to the train or
  the eval output, by `is_eval(rating, *side_inputs)`, counting examples per split."""

  def __init__(self, movies, users, is_eval):
    super().__init__(movies, users)
    self._is_eval = is_eval
    self._encoder = None

  def setup(self):
    super().setup()
    self._encoder = encoding.ExampleEncoder(self._movies, self._users)

  def process(self, batch, *side_inputs):
    n_eval = 0
    for rating in batch:
      example = self._encoder.encode(rating)
      if self._is_eval(rating, *side_inputs):
        n_eval += 1
        yield beam.pvalue.TaggedOutput(F.EVAL_SPLIT, example)
      else:
        yield example
    counter = beam.metrics.Metrics.counter
    counter(_METRICS_NAMESPACE, f"examples:{F.TRAIN_SPLIT}").inc(len(batch) - n_eval)
    counter(_METRICS_NAMESPACE, f"examples:{F.EVAL_SPLIT}").inc(n_eval)


def _temporal_cutoff(batches: beam.PCollection, train_fraction: float) -> beam.pvalue.AsSingleton:
  """The timestamp below which `train_fraction` of the ratings fall (global quantile)."""
  return beam.pvalue.AsSingleton(
      batches
      | "Timestamps" >> beam.Map(lambda batch: [r.timestamp for r in batch])
      | "Quantiles" >> beam.ApproximateQuantiles.Globally(101, input_batched=True)
      # No ratings: no quantiles; the empty splits are reported by Executor._record.
      | "Cutoff" >> beam.Map(lambda q: q[round(train_fraction * 100)] if q else 0))


class _WriteExamples(beam.PTransform):
  """Serialized Examples (bytes) to gzipped TFRecords in a split folder, as TFX's WriteSplit
  writes them but without its Reshuffle: keyed by a random number each, every example
  was held in the in-memory DirectRunner's shuffle before the first was written (this
  executor alone on 1M ratings: 2,365 -> 1,118 MiB peak, 60 -> 40 s; the same Examples).
  The examples need no order (every reader shuffles or aggregates), and on a distributed
  runner the encoding before this write is already spread by the ratings' Reshuffle."""

  def __init__(self, split_uri: str):
    super().__init__()
    self._prefix = os.path.join(split_uri, write_split.DEFAULT_FILE_NAME)

  def expand(self, examples):
    return examples | "WriteToTFRecord" >> beam.io.WriteToTFRecord(
        self._prefix, file_name_suffix=".gz")  # compression from the suffix: gzip


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
      return pcoll | f"Write[{label}]" >> _WriteExamples(
          artifact_utils.get_split_uri([artifact], split))

    pipeline = self._make_beam_pipeline()
    batches = (pipeline
               | "DataDir" >> beam.Create([data_dir])
               | "ReadRatings" >> beam.ParDo(_ReadRatings(layout.name, movies, users, skip))
               | "Reshuffle" >> beam.Reshuffle())
    if split_method == SPLIT_LAST:
      # Each user's eval_per_user + 1 newest ratings, then every rating against its user's.
      side = [beam.pvalue.AsSingleton(
          batches | "NewestPerUser" >> beam.CombineGlobally(_NewestPerUser(eval_per_user + 1)))]
      is_eval = lambda r, newest: splits.last_is_eval(r, newest[r.user_id], eval_per_user)
    elif split_method == SPLIT_RANDOM:
      side = []
      is_eval = lambda r: not splits.random_split_is_train(r, seed, train_fraction)
    else:
      cutoff_side = (beam.pvalue.AsSingleton(pipeline | "GivenCutoff" >> beam.Create([cutoff]))
                     if cutoff else _temporal_cutoff(batches, train_fraction))
      side = [cutoff_side]
      is_eval = lambda r, c: r.timestamp >= c
      if not cutoff:  # record the derived cutoff for the artifact's properties
        _ = cutoff_side.pvalue | "RecordCutoff" >> beam.Map(
            lambda c: beam.metrics.Metrics.distribution(
                _METRICS_NAMESPACE, "temporal_cutoff").update(c))
    rating_examples = batches | "SplitAndEncode" >> beam.ParDo(
        _SplitAndEncode(movies, users, is_eval), *side).with_outputs(
            F.EVAL_SPLIT, main=F.TRAIN_SPLIT)
    for split in (F.TRAIN_SPLIT, F.EVAL_SPLIT):
      write(rating_examples[split], examples, split, split)
    catalogue = (pipeline
                 | "Movies" >> beam.Create(sorted(movies.values(), key=lambda m: m.movie_id))
                 | "MovieToExample" >> beam.Map(
                     lambda movie: encoding.movie_example(movie).SerializeToString()))
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


def run_outside_pipeline(data_dir: str, out_dir: str, layout: str,
                         beam_pipeline_args: Optional[List[str]] = None,
                         **properties) -> Tuple[types.Artifact, types.Artifact]:
  """The executor without a pipeline or MLMD (tests, bench/example_gen_alone.py): the
  ratings and catalogue Examples written under `out_dir`. `properties` override the
  exec-properties below (split `last`, one eval rating per user, bad rows fail)."""
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  examples, candidates = standard_artifacts.Examples(), standard_artifacts.Examples()
  examples.uri = os.path.join(out_dir, "examples")
  candidates.uri = os.path.join(out_dir, "candidates")
  input_config = example_gen_pb2.Input(splits=[
      example_gen_pb2.Input.Split(name="single_split", pattern="*")])
  exec_properties = dict(
      input_base=data_dir, input_config=proto_utils.proto_to_json(input_config),
      layout=layout, split_method=SPLIT_LAST, train_fraction=0.8, split_seed=42,
      temporal_cutoff=0, eval_per_user=1, skip_bad_rows=0,
      output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP)
  exec_properties.update(properties)
  context = (base_beam_executor.BaseBeamExecutor.Context(
      beam_pipeline_args=beam_pipeline_args) if beam_pipeline_args is not None else None)
  Executor(context).Do({}, {EXAMPLES_KEY: [examples], CANDIDATES_KEY: [candidates]},
                       exec_properties)
  return examples, candidates
