"""Retrieval quality on MovieLens, next to baselines, on the pipeline's eval rows.

Runs the pipeline (LocalDagRunner, default configuration unless --split is given) on
$MOVIELENS_DATA_DIR (or --data-dir), then prints for the same eval rows over the whole
catalogue, every query seeing only the user's earlier ratings and the user's earlier
movies removed: popularity, EASE, EASE on a recency-weighted past, last-item
co-occurrence (bench/baselines.py), the pushed two-tower model (the RetrievalEvaluator's
own figures) and, with --variants, model variants trained by the same Trainer code on
the run's Transform output (ablations; training time and examples/s for each).

  .venv/bin/python -m bench.retrieval_quality [--data-dir DIR] [--split last|random]
      [--variants] [--variant 'name:key=value,key=value' ...]
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import baselines
from bench import pipeline_run

COLUMNS = ["hr_at_10", "ndcg_at_10", "hr_at_100", "hr_at_1", "top_10", "top_100"]
# Ablations of the default query tower (modules/hparams.py RetrievalHParams).
VARIANTS = {
    "+ sequence encoder (50 newest)": {"sequence_length": 50},
    "no time pools": {"history_time_scales": []},
    "no user id": {"use_user_id": False},
    "no history (id + context)": {"use_history": False},
}


def table(rows):
  header = f"{'scorer':<34}" + "".join(f"{c:>11}" for c in COLUMNS) + f"{'train s':>9}{'ex/s':>8}"
  lines = [header, "-" * len(header)]
  for name, metrics, training in rows:
    cells = "".join(f"{metrics[c]:>11.4f}" if c in metrics else f"{'':>11}" for c in COLUMNS)
    if training:
      cells += f"{training['train_seconds']:>9.0f}{training['examples_per_second']:>8.0f}"
    lines.append(f"{name:<34}{cells}")
  return "\n".join(lines)


def train_variant(run, data, overrides):
  """(metrics, training summary) of a retrieval model trained with `overrides` on the
  run's Transform output, exported and scored like the pushed one."""
  from components.retrieval_evaluator import evaluate  # pylint: disable=g-import-not-at-top
  from modules import retrieval_export  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as serving_dir:
    summary = pipeline_run.train_retrieval(run, overrides, serving_dir)
    metrics = evaluate.evaluate_model(retrieval_export.RetrievalModelPair(serving_dir), data)
  return metrics, summary


def every_training_movie_removed(data, scorers):
  """hr_at_10 / hr_at_100 with every training movie of the user removed, earlier or later:
  the seeds' "unseen" removal, which uses ratings made after the eval rating (a movie the
  user will rate later cannot be the one they rate now). Printed only to compare with
  figures measured that way; the pipeline's metrics remove the movies rated by then only."""
  from components.retrieval_evaluator import metrics  # pylint: disable=g-import-not-at-top
  every = lambda rows: [data.user_train_items[data.eval_users[r]] for r in rows]
  return {name: metrics.next_item(score_rows, data.eval_items, every, ks=(10, 100))
          for name, score_rows in scorers.items()}


def model_scorer(run, data):
  """score_rows of the run's exported retrieval model (causal queries, like the evaluator)."""
  from modules import retrieval_export  # pylint: disable=g-import-not-at-top
  from tfx.utils import path_utils  # pylint: disable=g-import-not-at-top
  pair = retrieval_export.RetrievalModelPair(
      path_utils.serving_model_dir(run.output("RetrievalTrainer", "model").uri))
  candidates, _ = pair.embed_candidate_examples(data.catalogue_serialized)
  queries = pair.embed_query_examples(data.eval_serialized)
  return lambda rows: queries[rows] @ candidates.T


def parse_variant(text):
  name, _, assignments = text.partition(":")
  overrides = {}
  for item in filter(None, assignments.split(",")):
    key, _, value = item.partition("=")
    overrides[key] = json.loads(value)
  return name, overrides


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data-dir")
  parser.add_argument("--output-dir", help="default: outputs/bench (split last), "
                      "outputs/bench-SPLIT otherwise")
  parser.add_argument("--split", help="the pipeline's split (default: its default, last)")
  parser.add_argument("--variants", action="store_true", help="also train the ablations")
  parser.add_argument("--variant", action="append", default=[],
                      help="an extra variant 'name:key=json,key=json' (RetrievalHParams)")
  parser.add_argument("--ease-l2", type=float, default=500.0)
  args = parser.parse_args(argv)

  from components.retrieval_evaluator import eval_set as eval_set_lib  # pylint: disable=g-import-not-at-top
  from components.retrieval_evaluator import evaluate  # pylint: disable=g-import-not-at-top

  output_dir = args.output_dir or (pipeline_run.DEFAULT_OUTPUT_DIR if args.split in (None, "last")
                                   else f"{pipeline_run.DEFAULT_OUTPUT_DIR}-{args.split}")
  config, run = pipeline_run.run(args.data_dir, output_dir,
                                 **({"split_method": args.split} if args.split else {}))
  with open(os.path.join(run.output("RetrievalEvaluator", "evaluation").uri,
                         "metrics.json")) as f:
    evaluation = json.load(f)
  model_uri = run.output("RetrievalTrainer", "model").uri
  with open(os.path.join(model_uri, "Format-Serving", "training.json")) as f:
    training = json.load(f)
  with open(os.path.join(run.output("IndexBuilder", "index").uri, "index.json")) as f:
    index = json.load(f)

  data = eval_set_lib.from_artifacts(
      pipeline_run.tfx_artifact(run, "MovieLensExampleGen", "examples"),
      pipeline_run.tfx_artifact(run, "MovieLensExampleGen", "candidates"))
  scored = lambda score_rows: evaluate.evaluate_scores(data, score_rows)
  rows = [("popularity (same execution)", evaluation["popularity"], None)]
  scorers = {"popularity": lambda r: evaluate.popularity_before(data, r)}
  for name, scorer in [
      (f"EASE (l2={args.ease_l2:g})", lambda: baselines.ease_scorer(data, args.ease_l2)),
      ("EASE, recency-weighted", lambda: baselines.ease_scorer(
          data, args.ease_l2, half_life=5.0, boost=5.0)),
      ("last-item co-occurrence", lambda: baselines.cooccurrence_scorer(data))]:
    started = time.monotonic()
    scorers[name] = scorer()
    rows.append((name, scored(scorers[name]), None))
    print(f"{name}: {time.monotonic() - started:.1f} s", file=sys.stderr)
  scorers["two-tower (pushed, default)"] = model_scorer(run, data)
  rows.append(("two-tower (pushed, default)", evaluation["model"]["metrics"], training))
  variants = dict(VARIANTS) if args.variants else {}
  variants.update(parse_variant(v) for v in args.variant)
  for name, overrides in variants.items():
    metrics, summary = train_variant(run, data, overrides)
    rows.append((name, metrics, summary))
    print(f"{name}: {json.dumps({c: round(metrics[c], 4) for c in COLUMNS})}", file=sys.stderr)

  print(f"{config.data_dir}, split {config.split_method}: {len(data.eval_items):,} eval "
        f"ratings of {len(data.users_with_eval):,} users, {len(data.catalogue_ids):,} movies "
        "(full ranking; queries see only earlier ratings; movies rated by then removed)\n")
  print(table(rows))
  print("\nhr_at_k / ndcg_at_10: the user's movies rated by then removed; top_k: nothing "
        "removed. train s / ex/s: training wall seconds and examples per second (all epochs).")
  print("\nThe same scorers with every training movie of the user removed, earlier or "
        "later (the seeds' 'unseen', which uses later ratings; for comparison only):")
  for name, metrics in every_training_movie_removed(data, scorers).items():
    print(f"  {name:<32} hr_at_10 {metrics['hr_at_10']:.4f}  hr_at_100 {metrics['hr_at_100']:.4f}")
  print(f"\npushed model hparams {json.dumps(training['hparams'])}")
  print(f"index      {index['config']['mode']} over {index['num_candidates']:,}: built in "
        f"{index['build_seconds']:.3f} s, recall@10 vs exact {index['recall_at_10']:.3f}, "
        f"{index['queries_per_second']:,.0f} queries/s batched, "
        f"{index['single_query_ms']:.3f} ms per single query")
  return 0


if __name__ == "__main__":
  sys.exit(main())
