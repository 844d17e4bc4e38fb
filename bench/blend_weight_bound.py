"""How far a different blend weight could take the second stage on split last (issue 12).

The served ranking score adds the sequence scorer's and the retrieval score, each
standardised within the candidate list, with equal weights (modules/sequence_scorer.blend):
nothing is fitted on the lists. This asks what another weight would have given on the
bench pipeline's eval rows (ml-100k, split `last`: each user's latest rating, its 100
retrieved candidates, the movies rated by then removed):

  ranking score = z(retrieval score) + w * z(scorer score),  w from 0 (retrieval order)
                  to infinity (the scorer alone)

Each w is scored on the same rows it would be chosen on, so the best row is an optimistic
bound, not a figure the product could claim: if even it is below issue 12's 1.08x, no
weight of these two scores gets there.

  .venv/bin/python -u -m bench.blend_weight_bound [--data-dir DIR]

Runs (or reuses, cached) the bench pipeline, then scores its pushed models' lists with the
TwoStageEvaluator's own code (components/two_stage_evaluator/evaluate.py).
"""

import argparse
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from bench import pipeline_run
from bench import ranking_quality as rq

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, np.inf)


def weighted_order(retrieval: np.ndarray, scorer: np.ndarray, known: np.ndarray,
                   weight: float) -> np.ndarray:
  """Column indices [rows, n], best first, by z(retrieval) + weight * z(scorer); the
  scorer alone (unknown candidates last, as retrieved) at weight infinity."""
  from components.two_stage_evaluator import evaluate  # pylint: disable=g-import-not-at-top
  from modules import sequence_scorer  # pylint: disable=g-import-not-at-top
  if np.isinf(weight):
    return evaluate.scorer_only_order(scorer, known)
  return np.argsort(-sequence_scorer.blend(scorer, retrieval, known, weight), axis=1,
                    kind="stable")


def sweep(retrieval: np.ndarray, scorer: np.ndarray, known: np.ndarray,
          labels: np.ndarray, rows_note: str) -> None:
  """Prints each weight's HR@10 and NDCG@10 and their ratios to retrieval order (95%
  paired bootstrap) on lists [rows, n] (retrieval order; labels True at the next movie)."""
  from components.two_stage_evaluator import evaluate  # pylint: disable=g-import-not-at-top
  base_hit, base_ndcg = evaluate.row_rates(
      np.broadcast_to(np.arange(labels.shape[1]), labels.shape), labels)
  print(f"{rows_note}; retrieval order HR@10 {base_hit.mean():.4f} NDCG@10 "
        f"{base_ndcg.mean():.4f}. Each weight is scored on the rows it would be chosen on.\n")
  print("| scorer weight w | HR@10 | NDCG@10 | HR@10 x retrieval (95%) | NDCG@10 x retrieval (95%) |")
  print("|---|---|---|---|---|")
  for weight in WEIGHTS:
    hit, ndcg = evaluate.row_rates(weighted_order(retrieval, scorer, known, weight), labels)
    cells = []
    for new, old in ((hit, base_hit), (ndcg, base_ndcg)):
      low, high = evaluate.paired_ratio_interval(new, old)
      cells.append(f"{new.mean() / old.mean():.3f} ({low:.3f}-{high:.3f})")
    name = "inf (scorer alone)" if np.isinf(weight) else f"{weight:g}" + (
        " (served)" if weight == 1.0 else " (retrieval order)" if weight == 0 else "")
    print(f"| {name} | {hit.mean():.4f} | {ndcg.mean():.4f} | {cells[0]} | {cells[1]} |")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data-dir", default=None)
  args = parser.parse_args(argv)
  from components.retrieval_evaluator import eval_set as eval_set_lib  # pylint: disable=g-import-not-at-top
  from components.two_stage_evaluator import evaluate  # pylint: disable=g-import-not-at-top
  from components.two_stage_evaluator import executor as two_stage  # pylint: disable=g-import-not-at-top
  from modules import retrieval_export  # pylint: disable=g-import-not-at-top
  from modules import sequence_scorer  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from tfx.utils import path_utils  # pylint: disable=g-import-not-at-top

  _, run = pipeline_run.run(args.data_dir)
  artifact = lambda node, key, cls=None: pipeline_run.tfx_artifact(run, node, key, cls)
  data = eval_set_lib.from_artifacts(artifact("MovieLensExampleGen", "examples"),
                                     artifact("MovieLensExampleGen", "candidates"))
  retrieval_model = artifact("RetrievalTrainer", "model", standard_artifacts.Model)
  ranking_model = artifact("RankingTrainer", "model", standard_artifacts.Model)
  pair = retrieval_export.RetrievalModelPair(path_utils.serving_model_dir(retrieval_model.uri))
  candidates, retrieval = evaluate.candidate_lists(pair, data, rq.N_RETRIEVED)
  scorer, known = evaluate.scorer_scores(
      sequence_scorer.LoadedScorer(two_stage.scorer_dir(ranking_model)), data, candidates)
  sweep(retrieval, scorer, known, candidates == data.eval_items[:, None],
        f"{len(candidates):,} eval ratings (split last), the pushed models' "
        f"{candidates.shape[1]} retrieved candidates each")
  return 0


if __name__ == "__main__":
  pipeline_run.exit_skipping_finalization(main())
