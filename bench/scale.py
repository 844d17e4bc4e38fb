"""The whole pipeline as the data grows: synthetic 100k, 1M and 10M ratings.

For each size, writes synthetic ml-1m-layout data once (`movrec generate-data`, about 35
ratings per user), then runs `movrec run` on it cold (no cache, fresh output folder) in a
child process while sampling the resident memory of that process and all its children
twice a second. Prints, per component, seconds (from MLMD: execution created → last
updated) and peak resident memory while it ran; the whole run's wall time and peak; the
Trainers' ratings per second; and the growth from each size to the next.

  .venv/bin/python -m bench.scale [--sizes 100k,1m,10m] [--output-dir outputs/bench-scale]

Not part of `make test`: the 1M run takes about a quarter of an hour on 2 cores.
"""

import argparse
import os
import subprocess
import sys
import threading
import time

import psutil

# size name: (users, movies); the generator draws 10-60 ratings per user (35 on average).
SIZES = {"100k": (2_860, 1_700), "1m": (28_600, 3_900), "10m": (286_000, 39_000)}
SAMPLE_SECONDS = 0.5


class TreeMemory(threading.Thread):
  """Samples (time, resident bytes of a process and its descendants) until stopped."""

  def __init__(self, pid: int):
    super().__init__(daemon=True)
    self.root, self.samples, self.done = psutil.Process(pid), [], threading.Event()

  def run(self):
    while not self.done.is_set():
      try:
        procs = [self.root] + self.root.children(recursive=True)
        rss = 0
        for p in procs:
          try:
            rss += p.memory_info().rss
          except psutil.Error:
            pass
        self.samples.append((time.time(), rss))
      except psutil.Error:
        break
      self.done.wait(SAMPLE_SECONDS)

  def peak(self, start: float = 0.0, end: float = float("inf")) -> int:
    return max((rss for t, rss in self.samples if start <= t <= end), default=0)


def movrec(*args) -> list:
  return [os.path.join(os.path.dirname(sys.executable), "movrec"), *args]


def run_size(name: str, output_dir: str) -> dict:
  users, movies = SIZES[name]
  data_dir = os.path.join(output_dir, f"data-{name}")
  if not os.path.isdir(data_dir):
    subprocess.run(movrec("generate-data", data_dir, "--layout", "ml-1m", "--users",
                          str(users), "--movies", str(movies)), check=True)
  run_dir = os.path.join(output_dir, f"run-{name}")
  subprocess.run(["rm", "-rf", run_dir], check=True)
  log = open(os.path.join(output_dir, f"run-{name}.log"), "w")
  started = time.time()
  child = subprocess.Popen(movrec("run", "--data-dir", data_dir, "--layout", "ml-1m",
                                  "--output-dir", run_dir, "--no-cache"),
                           stdout=log, stderr=subprocess.STDOUT)
  memory = TreeMemory(child.pid)
  memory.start()
  code = child.wait()
  wall = time.time() - started
  memory.done.set()
  memory.join()
  result = {"name": name, "exit": code, "wall": wall, "peak": memory.peak(), "components": {}}
  from pipeline import config as config_lib  # pylint: disable=g-import-not-at-top
  from pipeline import inspect_store  # pylint: disable=g-import-not-at-top
  config = config_lib.PipelineConfig(data_dir=data_dir, output_dir=run_dir)
  store = inspect_store.connect(config.metadata_path)
  run = inspect_store.run_summary.latest_run(store, config.pipeline_name)
  for c in run.components:
    begin = c.started_ms / 1000.0
    result["components"][c.node_id] = {"seconds": c.seconds, "state": c.state,
                                       "peak": memory.peak(begin, begin + c.seconds)}
  result["training"] = inspect_store.run_metrics(run).get("training", {})
  result["ratings"] = sum(1 for _ in open(os.path.join(data_dir, "ratings.dat")))
  return result


def mib(n: int) -> str:
  return f"{n / 2**20:,.0f}"


def table(results) -> str:
  names = list(results[0]["components"])
  head = " | ".join(f"{r['name']} s | {r['name']} peak MiB" for r in results)
  growth = [f"{a['name']}→{b['name']} time" for a, b in zip(results, results[1:])]
  lines = [f"| step | {head} | {' | '.join(growth)} |",
           "|---" * (1 + 2 * len(results) + len(growth)) + "|"]

  def row(label, cells, seconds):
    ratios = [f"{b / a:.1f}x" if a else "" for a, b in zip(seconds, seconds[1:])]
    lines.append(f"| {label} | {' | '.join(cells)} | {' | '.join(ratios)} |")

  for node in names:
    parts = [r["components"].get(node, {}) for r in results]
    row(node, [f"{p.get('seconds', 0):.1f} | {mib(p.get('peak', 0))}" for p in parts],
        [p.get("seconds", 0) for p in parts])
  row("**whole run (wall)**", [f"{r['wall']:.0f} | {mib(r['peak'])}" for r in results],
      [r["wall"] for r in results])
  lines.append("")
  for r in results:
    for stage, t in r["training"].items():
      lines.append(f"{r['name']} ({r['ratings']:,} ratings): {stage} Trainer "
                   f"{t['examples_per_second']:,.0f} ratings/s ({t['train_examples']:,} × "
                   f"{t['epochs']} epochs in {t['train_seconds']:.0f} s"
                   f"{', ' + t['feeding'] if t.get('feeding') else ''})")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default="100k,1m")
  parser.add_argument("--output-dir", default=os.path.join("outputs", "bench-scale"))
  args = parser.parse_args(argv)
  os.makedirs(args.output_dir, exist_ok=True)
  results = []
  for name in args.sizes.split(","):
    result = run_size(name, args.output_dir)
    print(f"{name}: exit {result['exit']}, {result['wall']:.0f} s, peak "
          f"{mib(result['peak'])} MiB", file=sys.stderr, flush=True)
    results.append(result)
  print(table(results))
  return 0 if all(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
  sys.exit(main())
