"""Blessing decisions shared by the RetrievalEvaluator, the IndexBuilder and the
TwoStageEvaluator.

A ModelBlessing is written the way TFX's Evaluator writes it (an empty BLESSED or
NOT_BLESSED file, custom properties `blessed`, `current_model`, `current_model_id`,
`baseline_model_id`), so TFX's LatestBlessedModelStrategy resolver and Pusher-style
checks understand it.

Every ModelBlessing of the pipeline also says what it blesses (`model_kind`). Compiled for
Kubeflow, a latest-blessed-model resolver becomes a query over all of the store's
ModelBlessings (not those of one component, as locally); kubeflow/runner.py scopes each
query by this property.
"""

import dataclasses
import json
import os
from typing import Dict, List, Mapping, Optional

from tfx.dsl.io import fileio
from tfx.types import Artifact
from tfx.utils import io_utils

BLESSED_FILE = "BLESSED"
NOT_BLESSED_FILE = "NOT_BLESSED"
BLESSED_KEY = "blessed"
REASONS_KEY = "reasons"
MODEL_KIND_KEY = "model_kind"
RETRIEVAL, RANKING, RETRIEVAL_INDEX = "retrieval", "ranking", "retrieval_index"
RANKING_ORDER = "ranking_order"  # the TwoStageEvaluator's: serving may order by ranking score


@dataclasses.dataclass
class Decision:
  blessed: bool
  reasons: List[str]  # why not, one line per failed check; or what passed

  def to_dict(self):
    return {"blessed": self.blessed, "reasons": self.reasons}


def decide(metrics: Mapping[str, float], thresholds: Mapping[str, float],
           baseline: Optional[Mapping[str, float]] = None,
           max_regression: float = 0.0,
           reference: Optional[Mapping[str, float]] = None,
           reference_name: str = "reference") -> Decision:
  """Blessed when every thresholded metric is ≥ its bound, given a baseline no
  thresholded metric is more than `max_regression` (absolute) below the baseline's, and
  given a reference (a non-learned scorer on the same data) every metric it names is
  strictly above the reference's."""
  failures, passes = [], []
  for name, floor in sorted((reference or {}).items()):
    line = f"{name} = {metrics[name]:.4f} vs {reference_name} {floor:.4f} (must be higher)"
    (passes if metrics[name] > floor else failures).append(line)
  for name, bound in sorted(thresholds.items()):
    if name not in metrics:
      raise ValueError(f"threshold on unknown metric {name!r}; metrics: {sorted(metrics)}")
    value = metrics[name]
    line = f"{name} = {value:.4f} (minimum {bound:.4f})"
    (passes if value >= bound else failures).append(line)
    if baseline is not None and name in baseline:
      floor = baseline[name] - max_regression
      line = f"{name} = {value:.4f} vs baseline {baseline[name]:.4f} (allowed drop {max_regression:.4f})"
      (passes if value >= floor else failures).append(line)
  return Decision(blessed=not failures, reasons=failures or passes)


def write_blessing(blessing: Artifact, decision: Decision, model: Artifact, model_kind: str,
                   baseline_model: Optional[Artifact] = None) -> None:
  name = BLESSED_FILE if decision.blessed else NOT_BLESSED_FILE
  io_utils.write_string_file(os.path.join(blessing.uri, name), "")
  blessing.set_int_custom_property(BLESSED_KEY, int(decision.blessed))
  blessing.set_string_custom_property("current_model", model.uri)
  blessing.set_int_custom_property("current_model_id", model.id)
  if baseline_model is not None:
    blessing.set_string_custom_property("baseline_model", baseline_model.uri)
    blessing.set_int_custom_property("baseline_model_id", baseline_model.id)
  blessing.set_string_custom_property(REASONS_KEY, "; ".join(decision.reasons))
  blessing.set_string_custom_property(MODEL_KIND_KEY, model_kind)


def is_blessed(blessing: Artifact) -> bool:
  return (blessing.has_custom_property(BLESSED_KEY) and
          blessing.get_int_custom_property(BLESSED_KEY) == 1 and
          fileio.exists(os.path.join(blessing.uri, BLESSED_FILE)))


def parse_json_param(value: Optional[str], name: str, default):
  """A JSON execution parameter (TFX parameters are flat; dicts travel as JSON)."""
  if not value:
    return default
  try:
    return json.loads(value)
  except json.JSONDecodeError as e:
    raise ValueError(f"parameter {name!r} is not valid JSON: {value!r} ({e})") from e


def record_metrics(artifact: Artifact, metrics: Dict[str, float], prefix: str = "") -> None:
  """Numeric metrics as float custom properties, for MLMD queries across runs."""
  for name, value in metrics.items():
    if isinstance(value, (int, float)):
      artifact.set_float_custom_property(prefix + name, float(value))
