"""HitRate@k, a query-keyed TFMA metric: the share of queries whose top k holds a positive.

TFMA 0.47 has NDCG@k and MinLabelPosition for ranking, but no hit rate. This follows
its NDCG: each query is one list (its examples share the MetricsSpec's query_key), the
list is sorted by the model's prediction, and a query without a positive label is left
out (weight 0). Used by name in an EvalConfig:

  tfma.MetricConfig(class_name="HitRate", module=hit_rate.__name__,
                    config='"top_k_list": [10]')
"""

from typing import Dict, Iterable, List, Optional

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.metrics import metric_util
from tensorflow_model_analysis.proto import config_pb2

HIT_RATE_NAME = "hit_rate"


class HitRate(metric_types.Metric):
  """HitRate@k for each k of top_k_list: a positive label among a query's k best."""

  def __init__(self, top_k_list: Optional[List[int]] = None, name: str = HIT_RATE_NAME):
    super().__init__(_hit_rate, top_k_list=top_k_list, name=name)


metric_types.register_metric(HitRate)


def _hit_rate(top_k_list: Optional[List[int]] = None, name: str = HIT_RATE_NAME,
              eval_config: Optional[config_pb2.EvalConfig] = None,
              model_names: Optional[List[str]] = None,
              output_names: Optional[List[str]] = None,
              sub_keys: Optional[List[metric_types.SubKey]] = None,
              example_weighted: bool = False,
              query_key: str = "") -> metric_types.MetricComputations:
  if not query_key:
    raise ValueError("HitRate is a query metric: the MetricsSpec needs a query_key")
  sub_keys = [k for k in (sub_keys or []) if k is not None and k.top_k is not None]
  sub_keys += [metric_types.SubKey(top_k=k) for k in top_k_list or []
               if not any(s.top_k == k for s in sub_keys)]
  if not sub_keys:
    raise ValueError("HitRate needs top_k_list (e.g. [10])")
  computations = []
  for model_name in model_names or [""]:
    for output_name in output_names or [""]:
      keys = [metric_types.MetricKey(name, model_name=model_name, output_name=output_name,
                                     sub_key=sub_key, example_weighted=example_weighted)
              for sub_key in sub_keys]
      computations.append(metric_types.MetricComputation(
          keys=keys, preprocessors=None,
          combiner=_HitRateCombiner(keys, eval_config, model_name, output_name,
                                    example_weighted)))
  return computations


class _HitRateCombiner(beam.CombineFn):
  """Accumulator: [weighted hits per key..., total weight of queries with a positive]."""

  def __init__(self, keys: List[metric_types.MetricKey],
               eval_config: Optional[config_pb2.EvalConfig], model_name: str,
               output_name: str, example_weighted: bool):
    self._keys = keys
    self._eval_config = eval_config
    self._model_name = model_name
    self._output_name = output_name
    self._example_weighted = example_weighted

  def create_accumulator(self) -> List[float]:
    return [0.0] * (len(self._keys) + 1)

  def add_input(self, accumulator: List[float],
                element: metric_types.StandardMetricInputs) -> List[float]:
    labels, predictions, weight = next(metric_util.to_label_prediction_example_weight(
        element, eval_config=self._eval_config, model_name=self._model_name,
        output_name=self._output_name, example_weighted=self._example_weighted,
        flatten=False, require_single_example_weight=True))
    positive = np.asarray(labels).reshape(-1)[np.argsort(
        np.asarray(predictions).reshape(-1), kind="stable")[::-1]] > 0
    if not positive.any():
      return accumulator
    first = int(np.argmax(positive))  # 0-based position of the best-placed positive
    for i, key in enumerate(self._keys):
      accumulator[i] += float(weight) * (first < key.sub_key.top_k)
    accumulator[-1] += float(weight)
    return accumulator

  def merge_accumulators(self, accumulators: Iterable[List[float]]) -> List[float]:
    accumulators = iter(accumulators)
    result = list(next(accumulators))
    for accumulator in accumulators:
      result = [a + b for a, b in zip(result, accumulator)]
    return result

  def extract_output(self, accumulator: List[float]) -> Dict[metric_types.MetricKey, float]:
    total = accumulator[-1]
    return {key: (accumulator[i] / total if total > 0 else float("nan"))
            for i, key in enumerate(self._keys)}
