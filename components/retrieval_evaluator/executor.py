"""RetrievalEvaluator executor: catalogue-wide exact metrics, baseline comparison, blessing."""

import json
import os
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.components.evaluator import executor as evaluator_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils
from tfx.utils import io_utils

from components import beam_embedding
from components import blessing as blessing_lib
from components import examples_io
from components.retrieval_evaluator import eval_set as eval_set_lib
from components.retrieval_evaluator import evaluate
from modules import features as F

MODEL_KEY = "model"
BASELINE_MODEL_KEY = "baseline_model"
EXAMPLES_KEY = "examples"
CANDIDATES_KEY = "candidates"
EVALUATION_KEY = "evaluation"
BLESSING_KEY = "blessing"
THRESHOLDS_KEY = "thresholds"
MAX_REGRESSION_KEY = "max_regression"
MUST_BEAT_POPULARITY_KEY = "must_beat_popularity"
METRICS_FILE = "metrics.json"
POPULARITY_PREFIX = "popularity_"  # the reference row's metrics on the evaluation artifact


class Executor(evaluator_executor.Executor):
  """Evaluates the model (and the last blessed one, and popularity, on the same data)
  and blesses or not.

  A subclass of TFX's Evaluator executor for one reason: the Kubeflow V2 entry point
  rewrites the blessing's model ids into the store's artifact names only for those, and
  the compiled latest-blessed-model resolver finds the model by that name. Do() is
  entirely this class's own.

  The eval rows and the catalogue are embedded by a Beam pipeline (components/
  beam_embedding.py, on the pipeline's Beam runner); the exact scoring is in memory.
  """

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
    baselines = input_dict.get(BASELINE_MODEL_KEY) or []
    baseline = baselines[0] if baselines else None
    if baseline is not None and baseline.id == model.id:
      baseline = None  # the model is its own last blessed version: nothing to compare
    thresholds = blessing_lib.parse_json_param(
        exec_properties.get(THRESHOLDS_KEY), THRESHOLDS_KEY, {})
    max_regression = float(exec_properties.get(MAX_REGRESSION_KEY) or 0.0)

    examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
    candidates = artifact_utils.get_single_instance(input_dict[CANDIDATES_KEY])
    data = eval_set_lib.from_artifacts(examples, candidates)
    models = {"model": model, **({"baseline": baseline} if baseline is not None else {})}
    embedded = beam_embedding.embed_with_beam(
        self._make_beam_pipeline, os.path.join(self._get_tmp_dir(), "embeddings"),
        {name: path_utils.serving_model_dir(m.uri) for name, m in models.items()},
        candidate_pattern=examples_io.split_pattern(candidates, F.CATALOG_SPLIT),
        query_pattern=examples_io.split_pattern(examples, F.EVAL_SPLIT))
    metrics = evaluate.evaluate_model(embedded["model"], data)
    popularity = evaluate.evaluate_popularity(data)
    baseline_metrics = None
    if baseline is not None:
      baseline_metrics = evaluate.evaluate_model(embedded["baseline"], data)
    decision = blessing_lib.decide(
        metrics, thresholds, baseline_metrics, max_regression,
        reference=({name: popularity[name] for name in evaluate.REFERENCE_METRICS}
                   if int(exec_properties.get(MUST_BEAT_POPULARITY_KEY, 1)) else None),
        reference_name="popularity")
    logging.info("RetrievalEvaluator: %s; %s", "BLESSED" if decision.blessed else
                 "NOT BLESSED", "; ".join(decision.reasons))

    evaluation = artifact_utils.get_single_instance(output_dict[EVALUATION_KEY])
    io_utils.write_string_file(os.path.join(evaluation.uri, METRICS_FILE), json.dumps({
        "model": {"uri": model.uri, "id": model.id, "metrics": metrics},
        "popularity": popularity,
        "baseline": None if baseline is None else {
            "uri": baseline.uri, "id": baseline.id, "metrics": baseline_metrics},
        "thresholds": thresholds, "max_regression": max_regression,
        "dropped_eval_rows": data.dropped_eval_rows,
        **decision.to_dict()}, indent=2))
    blessing_lib.record_metrics(evaluation, metrics)
    blessing_lib.record_metrics(evaluation, popularity, prefix=POPULARITY_PREFIX)
    blessing_lib.write_blessing(
        artifact_utils.get_single_instance(output_dict[BLESSING_KEY]), decision, model,
        blessing_lib.RETRIEVAL, baseline)
