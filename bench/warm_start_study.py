"""Does `--warm-start` help a run on a new span? Cold against warm on the same data.

The ratings are cut by time into two spans of equal size (span-1 older), in the release's
own layout; the other files (movies, users) are the same in both. Then, with the
product's pipeline and default settings (split `last`, so each span's eval ratings are
its users' latest):

1. span 1 alone, cold;
2. span 2 with `--rolling-spans 2 --warm-start`: both Trainers start from run 1's blessed
   models and train their usual epochs on both spans;
3. the same without warm start (ExampleGen and Transform come from run 2's cache);
4. with `--warm-epochs N`, on a second store: run 1 again, then run 2 with N epochs for
   both Trainers instead of their defaults.

Runs 2-4 are judged on the same eval rows (span 2's latest rating per user), so their
figures compare directly. `--eval-per-user 5` holds out each user's 5 latest ratings of a
span instead of 1: five times the eval rows, for differences one row can't resolve. The
sequence scorer is off (`--with-scorer` keeps it): it is not warm-started, and it would
add its training to every run. Prints a table.

  .venv/bin/python -u -m bench.warm_start_study [--data-dir DIR] [--output-dir DIR]
      [--eval-per-user 1] [--warm-epochs N] [--with-scorer]
"""

import argparse
import os
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import pipeline_run
from components.movielens_example_gen import layouts
from movrec import run_cmd
from pipeline import inspect_store

SPAN_PATTERN = "span-{SPAN}"
TIMESTAMP_FIELD = 3  # user, movie, rating, timestamp in every GroupLens ratings file


def write_spans(data_dir: str, out_dir: str, spans: int = 2) -> None:
  """`data_dir`'s ratings cut by time into `spans` equal parts, out_dir/span-1 the oldest;
  every other file of the release copied into each."""
  layout = layouts.detect_layout(data_dir)
  separator = layout.ratings_separator or layout.separator
  with open(layout.path(data_dir, layout.ratings_file), encoding=layout.encoding) as f:
    lines = f.read().splitlines()
  header = lines[:1] if layout.has_header else []
  rows = sorted(lines[len(header):],
                key=lambda line: int(line.split(separator)[TIMESTAMP_FIELD]))
  for i in range(spans):
    span_dir = os.path.join(out_dir, SPAN_PATTERN.format(SPAN=i + 1))
    os.makedirs(span_dir, exist_ok=True)
    part = rows[len(rows) * i // spans:len(rows) * (i + 1) // spans]
    with open(layout.path(span_dir, layout.ratings_file), "w",
              encoding=layout.encoding) as f:
      f.write("\n".join(header + part) + "\n")
    for name in (layout.movies_file, layout.users_file):
      if name and os.path.exists(layout.path(data_dir, name)):
        shutil.copy(layout.path(data_dir, name), layout.path(span_dir, name))


def figures(run) -> dict:
  row = inspect_store.run_metrics(run)
  retrieval, ranking = row.get("retrieval", {}), row.get("ranking", {})
  training = row.get("training", {})
  return {
      "hr": retrieval.get("hr_at_10"), "ndcg": retrieval.get("ndcg_at_10"),
      "hr100": retrieval.get("hr_at_100"),
      "popularity_hr": retrieval.get("popularity", {}).get("hr_at_10"),
      "retrieval_blessed": retrieval.get("blessed"),
      "rmse": ranking.get("rmse"), "ranking_blessed": ranking.get("blessed"),
      "retrieval_seconds": training.get("retrieval", {}).get("train_seconds"),
      "ranking_seconds": training.get("ranking", {}).get("train_seconds"),
      "eval_ratings": ranking.get("example_count"),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data-dir", help="a GroupLens release (default: as movrec run)")
  parser.add_argument("--output-dir", default=os.path.join("outputs", "bench-warm-start"))
  parser.add_argument("--eval-per-user", type=int, default=1)
  parser.add_argument("--with-scorer", action="store_true")
  parser.add_argument("--warm-epochs", type=int, default=0,
                      help="also warm-start span 2 with this many epochs (both Trainers)")
  args = parser.parse_args()

  if os.path.exists(args.output_dir):
    shutil.rmtree(args.output_dir)  # each study starts from no blessed model
  all_spans = os.path.abspath(os.path.join(args.output_dir, "spans"))
  write_spans(run_cmd.resolve_data_dir(args.data_dir), all_spans)
  ranking = {} if args.with_scorer else {"sequence_scorer": False}
  rows = {}

  def store(name):
    """A run function on a new MLMD store whose data directory holds span 1 only, and
    the function that adds span 2."""
    data_dir = os.path.join(args.output_dir, f"data-{name}")
    os.makedirs(data_dir)
    add = lambda span: os.symlink(os.path.join(all_spans, f"span-{span}"),
                                  os.path.join(data_dir, f"span-{span}"))
    add(1)

    def run(label, ranking_overrides=None, **values):
      started = time.monotonic()
      _, result = pipeline_run.run(
          data_dir=data_dir, output_dir=os.path.join(args.output_dir, name),
          ranking={**ranking, **(ranking_overrides or {})}, span_pattern=SPAN_PATTERN,
          rolling_spans=2, eval_per_user=args.eval_per_user, **values)
      rows[label] = figures(result)
      rows[label]["seconds"] = time.monotonic() - started
      print(f"{label}: {rows[label]}", flush=True)
    return run, lambda: add(2)

  run, add_span_2 = store("out")
  run("span 1, cold")
  add_span_2()
  run("span 2, warm start", warm_start=True)
  run("span 2, cold")
  if args.warm_epochs:  # its own store, so that its base model is span 1's too
    run, add_span_2 = store("out-short")
    run("span 1, cold (again)")
    add_span_2()
    epochs = {"epochs": args.warm_epochs}
    run(f"span 2, warm start, {args.warm_epochs} epochs", warm_start=True,
        retrieval=epochs, ranking_overrides=epochs)

  print("\n| run | eval ratings | HR@10 | NDCG@10 | HR@100 | popularity HR@10 | RMSE | "
        "retrieval / ranking training | blessed (retrieval, ranking) |")
  print("|---|---|---|---|---|---|---|---|---|")
  for label, r in rows.items():
    print(f"| {label} | {r['eval_ratings']:.0f} | {r['hr']:.4f} | {r['ndcg']:.4f} | "
          f"{r['hr100']:.4f} | "
          f"{r['popularity_hr']:.4f} | {r['rmse']:.4f} | "
          f"{r['retrieval_seconds']:.0f} / {r['ranking_seconds']:.0f} s | "
          f"{r['retrieval_blessed']}, {r['ranking_blessed']} |")
  pipeline_run.exit_skipping_finalization(0)


if __name__ == "__main__":
  main()
