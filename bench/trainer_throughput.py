"""One Trainer alone on an earlier run's Transform output: ratings/s per variant.

Each variant (RetrievalHParams, or with `--trainer ranking` RankingHParams, overrides)
trains in a fresh process, one after the other, with `modules.retrieval_trainer.train`
(or `ranking_trainer.train`) exactly as the pipeline's Trainer calls it (no export);
prints ratings/s over all epochs, wall seconds, final train / eval loss (ranking: RMSE)
and the process's peak resident memory. `--trainer sequence` trains the ranking
Trainer's sequence scorer alone (`ranking_trainer.train_sequence_scorer`, RankingHParams
overrides) and prints its queries/s, epochs run and kept, and best validation NDCG@10.
For the 1M figures, first `make bench-scale`, then:

  .venv/bin/python -m bench.trainer_throughput --output-dir outputs/bench-scale/run-1m \\
      --variant 'adam:optimizer="adam"' --variant 'lazy_adam:optimizer="lazy_adam"'

`--optimizer-step 943,28600,286000` times one optimizer step of a toy batch instead, for
user tables of those sizes (ml-100k, the 1M and the 10M synthetic data).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.retrieval_quality import parse_variant


def train_once(output_dir: str, trainer: str, overrides: dict) -> dict:
  from bench import pipeline_run  # pylint: disable=g-import-not-at-top
  from movrec import paths  # pylint: disable=g-import-not-at-top
  from pipeline import config as config_lib  # pylint: disable=g-import-not-at-top
  from pipeline import inspect_store  # pylint: disable=g-import-not-at-top
  where = argparse.Namespace(output_dir=output_dir, metadata=None,
                             pipeline_name=config_lib.DEFAULT_PIPELINE_NAME)
  run = inspect_store.run_summary.latest_run(
      inspect_store.connect(paths.metadata_path(where)), where.pipeline_name)
  if trainer == "sequence":
    from absl import logging  # pylint: disable=g-import-not-at-top
    logging.set_verbosity(logging.INFO)  # its epoch lines, on stderr (can take an hour)
    summary = pipeline_run.train_sequence_scorer(run, overrides)
    best = summary["by_epoch"][summary["best_epoch"] - 1]
    return {"ratings_per_second": summary["queries_per_epoch"] * summary["epochs_run"]
                                  / summary["train_seconds"],
            "train_seconds": summary["train_seconds"], "epochs_run": summary["epochs_run"],
            "best_epoch": summary["best_epoch"],
            "best_ndcg": best["validation_ndcg_at_10"],
            "validation_queries": summary["validation_queries"],
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
  if trainer == "ranking":
    summary = pipeline_run.train_ranking(run, overrides)
    losses = summary["train_rmse"], summary["eval_rmse"]
  else:
    summary = pipeline_run.train_retrieval(run, overrides)
    losses = summary["final_loss"], summary["final_eval_loss"]
  return {"ratings_per_second": summary["examples_per_second"],
          "train_seconds": summary["train_seconds"], "ratings": summary["train_examples"],
          "final_loss": losses[0], "final_eval_loss": losses[1],
          "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def optimizer_step_ms(optimizer_name: str, users: int, movies: int = 3_900,
                      steps: int = 200) -> float:
  """ms per step of `optimizer_name` on a toy model shaped like a retrieval batch: a
  gather of 13,000 rows of a [users, 64] table (a window batch's contexts) and of a
  [movies, 64] table, times a dense kernel."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from modules.hparams import make_optimizer  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(0)
  user_table = tf.Variable(tf.random.normal([users, 64]))
  movie_table = tf.Variable(tf.random.normal([movies, 64]))
  kernel = tf.Variable(tf.random.normal([64, 64]))
  weights = [user_table, movie_table, kernel]
  optimizer = make_optimizer(optimizer_name, 0.005)
  rng = np.random.default_rng(0)
  user_rows = tf.constant(rng.integers(0, users, 13_000))
  movie_rows = tf.constant(rng.integers(0, movies, 13_000))

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.gather(user_table, user_rows) *
                           tf.gather(movie_table, movie_rows) @ kernel)
    optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))

  step()  # traces and compiles
  started = time.monotonic()
  for _ in range(steps):
    step()
  return (time.monotonic() - started) / steps * 1000


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--output-dir", help="the earlier run's --output-dir")
  parser.add_argument("--trainer", choices=("retrieval", "ranking", "sequence"),
                      default="retrieval")
  parser.add_argument("--variant", action="append", default=[],
                      help="'name:key=json,key=json' (RetrievalHParams or RankingHParams); "
                           "default: the defaults")
  parser.add_argument("--optimizer-step", metavar="USERS,USERS",
                      help="instead: ms per optimizer step on a toy batch for these table sizes")
  parser.add_argument("--one", help=argparse.SUPPRESS)  # a child's overrides (JSON)
  args = parser.parse_args(argv)
  if args.optimizer_step:
    print(f"{'users':>9}{'adam ms':>9}{'lazy_adam ms':>14}")
    for users in map(int, args.optimizer_step.split(",")):
      print(f"{users:>9,}{optimizer_step_ms('adam', users):>9.1f}"
            f"{optimizer_step_ms('lazy_adam', users):>14.1f}")
    return 0
  if not args.output_dir:
    parser.error("--output-dir is required (or --optimizer-step)")
  if args.one is not None:
    print(json.dumps(train_once(args.output_dir, args.trainer, json.loads(args.one))))
    return 0
  loss = "rmse" if args.trainer == "ranking" else "loss"
  if args.trainer == "sequence":
    print(f"{'variant':<24}{'queries/s':>11}{'train s':>9}{'epochs':>8}{'kept':>6}"
          f"{'best val NDCG@10':>18}{'val rows':>10}{'peak MiB':>10}")
  else:
    print(f"{'variant':<24}{'ratings/s':>11}{'train s':>9}{loss:>10}{'eval ' + loss:>11}"
          f"{'peak MiB':>10}")
  for name, overrides in [parse_variant(v) for v in args.variant] or [("defaults", {})]:
    child = subprocess.run([sys.executable, "-m", "bench.trainer_throughput", "--output-dir",
                            args.output_dir, "--trainer", args.trainer,
                            "--one", json.dumps(overrides)],
                           check=True, stdout=subprocess.PIPE, text=True)
    r = json.loads(child.stdout.strip().splitlines()[-1])
    if args.trainer == "sequence":
      print(f"{name:<24}{r['ratings_per_second']:>11,.0f}{r['train_seconds']:>9.0f}"
            f"{r['epochs_run']:>8}{r['best_epoch']:>6}{r['best_ndcg']:>18.4f}"
            f"{r['validation_queries']:>10,}{r['peak_mib']:>10,.0f}", flush=True)
      continue
    print(f"{name:<24}{r['ratings_per_second']:>11,.0f}{r['train_seconds']:>9.0f}"
          f"{r['final_loss']:>10.4g}{r['final_eval_loss']:>11.4g}{r['peak_mib']:>10,.0f}",
          flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
