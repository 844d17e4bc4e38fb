"""TwoStageEvaluator executor: the two-stage order against retrieval order, and its blessing."""

import json
import os
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils
from tfx.utils import path_utils

from components import blessing as blessing_lib
from components.retrieval_evaluator import eval_set as eval_set_lib
from components.two_stage_evaluator import evaluate
from components.two_stage_evaluator import tfma_lists
from modules import ranking_trainer
from modules import retrieval_export
from modules import sequence_scorer

RETRIEVAL_MODEL_KEY = "retrieval_model"
RANKING_MODEL_KEY = "ranking_model"
BASELINE_RANKING_MODEL_KEY = "baseline_ranking_model"
EXAMPLES_KEY = "examples"
CANDIDATES_KEY = "candidates"
EVALUATION_KEY = "evaluation"
BLESSING_KEY = "blessing"
LIST_SIZE_KEY = "list_size"
MAX_EVAL_RATINGS_KEY = "max_eval_ratings"
MIN_GAIN_KEY = "min_gain"
MAX_REGRESSION_KEY = "max_regression"
METRICS_FILE = "metrics.json"
GATED_METRIC = "ndcg_at_10"


def scorer_dir(ranking_model: types.Artifact) -> str:
  return os.path.join(path_utils.serving_model_dir(ranking_model.uri), sequence_scorer.EXPORT_DIR)


def why_no_scorer(ranking_model: types.Artifact) -> str:
  """What the RankingTrainer recorded about skipping the scorer."""
  path = os.path.join(path_utils.serving_model_dir(ranking_model.uri),
                      ranking_trainer.TRAINING_FILE)
  try:
    with open(path) as f:
      skipped = (json.load(f).get("sequence_scorer") or {}).get("skipped")
  except (OSError, ValueError):
    skipped = None
  return f"the ranking model has no sequence scorer ({skipped or 'not trained'})"


def decide(metrics: Dict[str, float], min_gain: float,
           max_regression: float = 0.0) -> blessing_lib.Decision:
  """Blessed when the two-stage NDCG@10 is above retrieval order's × (1 + min_gain) and,
  when the metrics have the last blessed ranker's (`baseline_two_stage_ndcg_at_10`), at
  most `max_regression` below it."""
  value = metrics[f"two_stage_{GATED_METRIC}"]
  decision = blessing_lib.decide(
      {GATED_METRIC: value}, {},
      reference={GATED_METRIC: metrics[f"retrieval_order_{GATED_METRIC}"] * (1 + min_gain)},
      reference_name=f"retrieval order x {1 + min_gain:g}")
  baseline = metrics.get(f"baseline_two_stage_{GATED_METRIC}")
  if baseline is None:
    return decision
  kept = value >= baseline - max_regression
  line = (f"{GATED_METRIC} = {value:.4f} vs the last blessed ranker's {baseline:.4f} "
          f"(allowed drop {max_regression:.4f})")
  if decision.blessed:
    return blessing_lib.Decision(kept, decision.reasons + [line] if kept else [line])
  return blessing_lib.Decision(False, decision.reasons + ([] if kept else [line]))


def baseline_scorer(baseline: Optional[types.Artifact],
                    ranking: types.Artifact) -> Tuple[Optional[sequence_scorer.LoadedScorer], str]:
  """(the last blessed ranker's scorer, or None; what the comparison is, for the log)."""
  if baseline is None:
    return None, "no ranking model's order was blessed before: no baseline"
  if baseline.id == ranking.id:
    return None, f"the baseline is this ranking model ({ranking.id}): no comparison"
  if not os.path.isdir(scorer_dir(baseline)):
    return None, f"the last blessed ranker ({baseline.id}) has no sequence scorer"
  return sequence_scorer.LoadedScorer(scorer_dir(baseline)), \
      f"against the last blessed ranker ({baseline.id})"


class Executor(base_beam_executor.BaseBeamExecutor):

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    retrieval = artifact_utils.get_single_instance(input_dict[RETRIEVAL_MODEL_KEY])
    ranking = artifact_utils.get_single_instance(input_dict[RANKING_MODEL_KEY])
    min_gain = float(exec_properties.get(MIN_GAIN_KEY) or 0.0)
    max_regression = float(exec_properties.get(MAX_REGRESSION_KEY) or 0.0)
    baseline_model = (input_dict.get(BASELINE_RANKING_MODEL_KEY) or [None])[0]
    baseline, baseline_note = baseline_scorer(baseline_model, ranking)
    evaluation = artifact_utils.get_single_instance(output_dict[EVALUATION_KEY])
    metrics: Dict[str, float] = {}
    slices: Dict[str, Dict[str, float]] = {}
    if not os.path.isdir(scorer_dir(ranking)):
      decision = blessing_lib.Decision(False, [why_no_scorer(ranking)])
    else:
      everything = eval_set_lib.from_artifacts(
          artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY]),
          artifact_utils.get_single_instance(input_dict[CANDIDATES_KEY]))
      data = evaluate.sample(everything, int(exec_properties.get(MAX_EVAL_RATINGS_KEY)
                                             or evaluate.MAX_EVAL_RATINGS))
      if data is not everything:
        logging.info("TwoStageEvaluator: %s of the %s eval ratings, drawn at random",
                     f"{len(data.eval_items):,}", f"{len(everything.eval_items):,}")
      lists = evaluate.ordered_lists(
          retrieval_export.RetrievalModelPair(path_utils.serving_model_dir(retrieval.uri)),
          sequence_scorer.LoadedScorer(scorer_dir(ranking)), data,
          int(exec_properties.get(LIST_SIZE_KEY) or 100), baseline)
      slices = self._tfma_metrics(lists, evaluation.uri)
      metrics = evaluate.summary(lists, slices.pop("", {}), len(everything.eval_items))
      decision = decide(metrics, min_gain, max_regression)
    logging.info("TwoStageEvaluator: ranking order %s (%s); %s",
                 "BLESSED" if decision.blessed else "NOT BLESSED", baseline_note,
                 "; ".join(decision.reasons))
    io_utils.write_string_file(os.path.join(evaluation.uri, METRICS_FILE), json.dumps({
        "retrieval_model": {"uri": retrieval.uri, "id": retrieval.id},
        "ranking_model": {"uri": ranking.uri, "id": ranking.id},
        "baseline_ranking_model": ({"uri": baseline_model.uri, "id": baseline_model.id}
                                   if baseline is not None else None),
        "baseline": baseline_note, "metrics": metrics, "slices": slices, "min_gain": min_gain,
        "max_regression": max_regression, **decision.to_dict()}, indent=2))
    blessing_lib.record_metrics(evaluation, metrics)
    blessing_lib.write_blessing(artifact_utils.get_single_instance(output_dict[BLESSING_KEY]),
                                decision, ranking, blessing_lib.RANKING_ORDER,
                                baseline_model if baseline is not None else None)

  def _tfma_metrics(self, lists: evaluate.OrderedLists,
                    output_path: str) -> Dict[str, Dict[str, float]]:
    """TFMA's figures of each order, by slice (tfma_lists.load); its EvalResult is
    written to `output_path` (the evaluation artifact)."""
    if not len(lists.labels):
      return {}
    orders = list(lists.orders)
    with self._make_beam_pipeline() as pipeline:
      tfma_lists.evaluate(pipeline, list(tfma_lists.examples(
          lists.orders, lists.labels, lists.history_lengths)), orders, output_path)
    slices = tfma_lists.load(output_path, orders)
    for name, count in tfma_lists.queries_by_slice(lists.history_lengths).items():
      slices.setdefault(name, {})["eval_ratings"] = count
    return slices
