"""The two-stage candidate lists as TFMA evaluates them: NDCG@10 and HitRate@10 per query.

Each eval rating is a query: one tf.Example per candidate, with the query's id, whether
the candidate is the movie rated next (the gain), the user's history length at that time
(a slice), and for each order of the list a prediction: that order's places reversed
(n for the first, 1 for the last). Predictions from places, not scores, so TFMA sorts
each list exactly as the order was made, tie-breaks included. When the movie rated next
was not retrieved, the query gets one more example, that movie with prediction 0: below
every candidate, so the query counts as a miss (TFMA leaves a query without a positive
out of its averages; the next-item protocol counts it as 0). Only what decides @10 is
written: each order's 10 best and the movie rated next (about a fifth of the examples,
a quarter of TFMA's time), so TFMA's NDCG@10 and HitRate@10 are the whole lists'.

The orders are TFMA "models" without a model (model-agnostic: each reads its prediction
key), so the result is a standard TFMA EvalResult: `tfma.load_eval_result(uri)`.
"""

from typing import Dict, Iterator, List, Sequence

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx_bsl.public import tfxio

from components.two_stage_evaluator import hit_rate

QUERY_KEY = "query"
GAIN_KEY = "rated_next"
HISTORY_KEY = "history_length"
K = 10
NDCG = "ndcg"
HIT_RATE = hit_rate.HIT_RATE_NAME
# Movies the user had rated before the query; bounds chosen to separate the cold start
# (none, a few) from users the sequence scorer can read a full window of.
HISTORY_BUCKETS = ((0, "0"), (1, "1-4"), (5, "5-19"), (20, "20-49"), (50, "50+"))


def prediction_key(order: str) -> str:
  return f"{order}_place"


def history_bucket(length: int) -> str:
  return [name for low, name in HISTORY_BUCKETS if length >= low][-1]


def slice_name(bucket: str) -> str:
  """The name `load` gives a history-length slice."""
  return f"{HISTORY_KEY}={bucket}"


def queries_by_slice(history_lengths: Sequence[int]) -> Dict[str, int]:
  """How many queries (eval ratings) each history-length slice has."""
  names = [slice_name(history_bucket(int(n))) for n in history_lengths]
  return {name: names.count(name) for name in sorted(set(names))}


def examples(orders: Dict[str, np.ndarray], labels: np.ndarray,
             history_lengths: Sequence[int]) -> Iterator[bytes]:
  """Serialized tf.Examples of the lists. orders: {name: [rows, n] column indices, best
  first}; labels [rows, n]: True at the movie rated next; history_lengths: per row."""
  rows, n = labels.shape
  places = {name: np.empty((rows, n), np.float32) for name in orders}
  for name, order in orders.items():
    np.put_along_axis(places[name], order, np.arange(n, 0, -1, dtype=np.float32), 1)
  # Only what decides @K: each order's K best, and the movie rated next wherever it is.
  kept = labels.copy()
  for order in orders.values():
    np.put_along_axis(kept, order[:, :K], True, 1)
  for row in range(rows):
    common = {QUERY_KEY: _int(row), HISTORY_KEY: _bytes(history_bucket(history_lengths[row]))}
    for column in np.flatnonzero(kept[row]):
      yield _example(common, float(labels[row, column]),
                     {name: float(p[row, column]) for name, p in places.items()})
    if not labels[row].any():  # not retrieved: below every candidate in every order
      yield _example(common, 1.0, {name: 0.0 for name in orders})


def _example(common, gain: float, predictions: Dict[str, float]) -> bytes:
  feature = dict(common, **{GAIN_KEY: _float(gain)})
  feature.update({prediction_key(name): _float(v) for name, v in predictions.items()})
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _int(value: int) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def _float(value: float) -> tf.train.Feature:
  return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))


def _bytes(value: str) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))


def eval_config(orders: List[str]) -> tfma.EvalConfig:
  """NDCG@10 and HitRate@10 per order (query-keyed), overall and by history length."""
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(name=name, prediction_key=prediction_key(name),
                                  label_key=GAIN_KEY) for name in orders],
      slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[HISTORY_KEY])],
      metrics_specs=[tfma.MetricsSpec(
          query_key=QUERY_KEY, model_names=list(orders),
          metrics=[
              tfma.MetricConfig(class_name="NDCG", config=f'"gain_key": "{GAIN_KEY}", '
                                                          f'"top_k_list": [{K}]'),
              tfma.MetricConfig(class_name="HitRate", module=hit_rate.__name__,
                                config=f'"top_k_list": [{K}]'),
          ])])


def evaluate(pipeline: beam.Pipeline, serialized: Sequence[bytes], orders: List[str],
             output_path: str) -> None:
  """Runs TFMA over the lists in `pipeline` (run when its `with` block ends)."""
  records = tfxio.TFExampleBeamRecord(physical_format="inmem", telemetry_descriptors=[],
                                      raw_record_column_name=tfma.ARROW_INPUT_COLUMN)
  _ = (pipeline
       | "Lists" >> beam.Create(serialized, reshuffle=False)
       | "ToArrow" >> records.BeamSource()
       | "Evaluate" >> tfma.ExtractEvaluateAndWriteResults(
           eval_config=eval_config(orders), output_path=output_path))


def load(output_path: str, orders: List[str]) -> Dict[str, Dict[str, float]]:
  """{slice ("" overall, "history_length=1-4", ...): {"<order>_ndcg_at_10": ...,
  "<order>_hr_at_10": ...}} of `evaluate`'s output."""
  from tensorflow.python.util import deprecation  # pylint: disable=g-import-not-at-top
  out: Dict[str, Dict[str, float]] = {}
  for order in orders:
    with deprecation.silence():  # TFMA's reader warns once a process, on the console
      result = tfma.load_eval_result(output_path, model_name=order)
    for slice_key, by_output in result.slicing_metrics:
      values = out.setdefault(",".join(f"{k}={v}" for k, v in slice_key), {})  # slice_name
      for sub_key, metrics in by_output.get("", {}).items():
        for metric, value in metrics.items():
          if "doubleValue" in value:
            values[f"{order}_{_NAMES.get((metric, sub_key), metric)}"] = value["doubleValue"]
  return out


_NAMES = {(NDCG, f"topK:{K}"): f"ndcg_at_{K}", (HIT_RATE, f"topK:{K}"): f"hr_at_{K}"}
