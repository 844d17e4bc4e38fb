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

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import baselines  # pylint: disable=g-import-not-at-top
from bench import pipeline_run  # pylint: disable=g-import-not-at-top

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
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  from components.retrieval_evaluator import evaluate  # pylint: disable=g-import-not-at-top
  from modules import retrieval_export, retrieval_trainer  # pylint: disable=g-import-not-at-top
  from modules.hparams import RetrievalHParams  # pylint: disable=g-import-not-at-top
  transformed = run.output("Transform", "transformed_examples").uri
  tft_output = tft.TFTransformOutput(run.output("Transform", "transform_graph").uri)
  files = lambda split: os.path.join(transformed, f"Split-{split}", "*")
  model, summary = retrieval_trainer.train(files("train"), files("eval"), tft_output,
                                           RetrievalHParams.from_dict(overrides))
  with tempfile.TemporaryDirectory() as serving_dir:
    retrieval_trainer.export(model, tft_output, serving_dir, summary)
    metrics = evaluate.evaluate_model(retrieval_export.RetrievalModelPair(serving_dir), data)
  return metrics, summary


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
  for name, scorer in [
      (f"EASE (l2={args.ease_l2:g})", lambda: baselines.ease_scorer(data, args.ease_l2)),
      ("EASE, recency-weighted", lambda: baselines.ease_scorer(
          data, args.ease_l2, half_life=5.0, boost=5.0)),
      ("last-item co-occurrence", lambda: baselines.cooccurrence_scorer(data))]:
    started = time.monotonic()
    rows.append((name, scored(scorer()), None))
    print(f"{name}: {time.monotonic() - started:.1f} s", file=sys.stderr)
  rows.append(("two-tower (pushed, default)", evaluation["model"]["metrics"], training))
  variants = dict(VARIANTS) if args.variants else {}
  variants.update(parse_variant(v) for v in args.variant)
  for name, overrides in variants.items():
    metrics, summary = train_variant(run, data, overrides)
    rows.append((name, metrics, summary))
    print(f"{name}: {json.dumps({c: round(metrics[c], 4) for c in COLUMNS})}", file=sys.stderr)

  print(f"{config.data_dir}, split {config.split_method}: {len(data.eval_items):,} eval "
        f"ratings of {len(data.users_with_eval):,} users, {len(data.catalogue_ids):,} movies "
        "(full ranking; queries see only earlier ratings; earlier movies removed)\n")
  print(table(rows))
  print("\nhr_at_k / ndcg_at_10: earlier movies removed; top_k: nothing removed. "
        "train s / ex/s: training wall seconds and examples per second (all epochs).")
  print(f"pushed model hparams {json.dumps(training['hparams'])}")
  print(f"index      {index['config']['mode']} over {index['num_candidates']:,}: built in "
        f"{index['build_seconds']:.3f} s, recall@10 vs exact {index['recall_at_10']:.3f}, "
        f"{index['queries_per_second']:,.0f} queries/s batched, "
        f"{index['single_query_ms']:.3f} ms per single query")
  return 0


if __name__ == "__main__":
  sys.exit(main())
