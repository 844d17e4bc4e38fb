"""Serving speed of the newest bundle: in-process recommend latency, then HTTP throughput.

1. In process: Recommender.recommend (retrieve 100, drop rated, rank, top 10) for random
   known users; p50/p99 over --calls calls after a warm-up.
2. HTTP: `movrec serve` in one process, bench/load_generator.py in another, for
   --seconds; requests/s, errors, p50/p99 as the client saw them.

  .venv/bin/python -m bench.serving_latency [--serving-dir DIR] [--seconds 60]
"""

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top

from bench import pipeline_run  # pylint: disable=g-import-not-at-top


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--serving-dir", default=pipeline_run.DEFAULT_SERVING_DIR)
  parser.add_argument("--calls", type=int, default=1000)
  parser.add_argument("--seconds", type=float, default=60)
  parser.add_argument("--connections", type=int, default=8)
  args = parser.parse_args(argv)

  from serving.recommender import Recommender, latest_bundle_path  # pylint: disable=g-import-not-at-top
  rec = Recommender(latest_bundle_path(args.serving_dir))
  users = sorted(rec.retriever.users)
  rng = random.Random(0)
  for user in users[:50]:
    rec.recommend(user)
  timings = []
  for _ in range(args.calls):
    user = rng.choice(users)
    started = time.perf_counter()
    rec.recommend(user, k=10, candidates=100)
    timings.append(1000 * (time.perf_counter() - started))
  print(f"bundle {rec.version}: in-process recommend (100 retrieved, ranked, top 10), "
        f"{args.calls} calls: p50 {np.percentile(timings, 50):.2f} ms, "
        f"p99 {np.percentile(timings, 99):.2f} ms, mean {np.mean(timings):.2f} ms")

  port = free_port()
  server = subprocess.Popen(
      [os.path.join(os.path.dirname(sys.executable), "movrec"), "serve", "--serving-dir",
       args.serving_dir, "--port", str(port)], stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL)
  try:
    for _ in range(600):
      try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
        break
      except OSError:
        time.sleep(0.1)
    sample = ",".join(rng.sample(users, min(200, len(users))))
    load = subprocess.run(
        [sys.executable, "-m", "bench.load_generator", f"http://127.0.0.1:{port}",
         "--seconds", str(args.seconds), "--connections", str(args.connections),
         "--users", sample], capture_output=True, text=True, check=True)
    result = json.loads(load.stdout.strip().splitlines()[-1])
  finally:
    server.terminate()
    server.wait(timeout=30)
  print(f"HTTP POST /recommend, {args.connections} connections for {result['seconds']} s "
        f"(server and load generator in separate processes, {os.cpu_count()} cores): "
        f"{result['requests_per_second']:.0f} requests/s, {result['errors']} errors "
        f"of {result['requests']:,}; client p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
  return 0


if __name__ == "__main__":
  sys.exit(main())
