"""Serving speed of the newest bundle: in-process recommend latency, then HTTP throughput.

1. In process: Recommender.recommend (retrieve 100, drop rated, order them by ranking
   score when the bundle has a sequence scorer, predict the ratings of the top 10) for
   random known users, then for an unknown user described by the request; p50/p99 over
   --calls calls after a warm-up, for each order.
2. HTTP: `movrec serve` in one process, bench/load_generator.py in another, for
   --seconds, asking for the first order measured; requests/s, errors, p50/p99 as the
   client saw them.
3. With --soak-minutes M: the same load for M minutes while a new bundle version (a copy
   of the newest, published the way the BundlePusher publishes: temporary folder, file
   list in the manifest, rename) appears every --push-every seconds; failed requests,
   versions served, and the server's resident memory at the start and the end.

  .venv/bin/python -m bench.serving_latency [--serving-dir DIR] [--seconds 60]
      [--soak-minutes 10 --push-every 60] [--workers 2]
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from bench import pipeline_run
from serving import workers as workers_lib


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
  parser.add_argument("--soak-minutes", type=float, default=0)
  parser.add_argument("--push-every", type=float, default=60)
  parser.add_argument("--workers", type=int, default=1, help="movrec serve --workers")
  args = parser.parse_args(argv)

  from serving.recommender import LiveRecommender  # pylint: disable=g-import-not-at-top
  started = time.monotonic()
  rec = LiveRecommender(args.serving_dir).current
  meta = rec.metadata()
  print(f"bundle {rec.version} loaded in {time.monotonic() - started:.1f} s (known users' "
        f"query embeddings and rating features included); sequence scorer on "
        f"{meta['sequence_scorer']}, known users' ratings on {meta['predicted_rating']}")
  users = sorted(rec.retriever.users)
  rng = random.Random(0)
  from serving import recommender as recommender_lib  # pylint: disable=g-import-not-at-top
  orders = ([recommender_lib.RANKING_ORDER] if rec.has_sequence_scorer else []) + [
      recommender_lib.RETRIEVAL_ORDER]
  default = (recommender_lib.RANKING_ORDER if rec.no_ranking_order is None else
             f"{recommender_lib.RETRIEVAL_ORDER} ({rec.no_ranking_order})")
  print(f"bundle {rec.version}: default order {default}")
  # A known user's own request (what was computed at load serves it), and an unknown user
  # described by demographics and five rated movies (the query tower and the rating graph
  # run per request).
  described = {"features": {"user_age": 30, "user_gender": "F", "user_occupation": "writer"},
               "rated": rec.popular[:5]}
  requests = [("known user", lambda: (rng.choice(users), {})),
              ("described user", lambda: ("bench-new-user", described))]
  for order in orders:
    for who, request in requests:
      for user in users[:50]:
        rec.recommend(user, order_by=order, **request()[1])
      timings = []
      for _ in range(args.calls):
        user, extra = request()
        started = time.perf_counter()
        rec.recommend(user, k=10, candidates=100, order_by=order, **extra)
        timings.append(1000 * (time.perf_counter() - started))
      print(f"in-process recommend by {order}, {who} (100 retrieved, top 10 with predicted "
            f"ratings), {args.calls} calls: p50 {np.percentile(timings, 50):.2f} ms, "
            f"p99 {np.percentile(timings, 99):.2f} ms, mean {np.mean(timings):.2f} ms")

  sample = ",".join(rng.sample(users, min(200, len(users))))
  result, _ = http_load(args.serving_dir, sample, args.seconds, args.connections,
                        workers=args.workers, order_by=orders[0])
  print(f"HTTP POST /recommend by {orders[0]}, {args.workers} worker(s), "
        f"{args.connections} connections "
        f"for {result['seconds']} s "
        f"(server and load generator in separate processes, {os.cpu_count()} cores): "
        f"{result['requests_per_second']:.0f} requests/s, {result['errors']} errors "
        f"of {result['requests']:,}; client p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
  if args.soak_minutes:
    import shutil  # pylint: disable=g-import-not-at-top
    import tempfile  # pylint: disable=g-import-not-at-top
    with tempfile.TemporaryDirectory() as soak_dir:  # the pushes go here, not to the bench's
      shutil.copytree(rec.path, os.path.join(soak_dir, os.path.basename(rec.path)))
      result, soak = http_load(soak_dir, sample, args.soak_minutes * 60, args.connections,
                               push_every=args.push_every, workers=args.workers)
    growth = 100.0 * (soak["rss_end"] - soak["rss_start"]) / soak["rss_start"]
    print(f"soak: {args.soak_minutes:g} min at {result['requests_per_second']:.0f} "
          f"requests/s, {len(soak['pushed'])} versions pushed (every {args.push_every:g} s), "
          f"{result['errors']} failed of {result['requests']:,}; p50 {result['p50_ms']} ms, "
          f"p99 {result['p99_ms']} ms; server resident memory {soak['rss_start'] / 2**20:.0f} "
          f"MiB after warm-up -> {soak['rss_end'] / 2**20:.0f} MiB at the end "
          f"({growth:+.1f}%); serving version {soak['served']} (last pushed "
          f"{soak['pushed'][-1] if soak['pushed'] else '-'})")
  return 0


def rss_bytes(pid: int) -> int:
  """Resident memory of the process and its descendants (the workers)."""
  total = 0
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        total = int(line.split()[1]) * 1024
  with open(f"/proc/{pid}/task/{pid}/children") as f:
    return total + sum(rss_bytes(int(child)) for child in f.read().split())


def publish_copy(serving_dir: str) -> int:
  """A new version: the newest copied, published as the BundlePusher publishes (a
  temporary folder, the manifest with its file list last, then a rename)."""
  import shutil  # pylint: disable=g-import-not-at-top
  from bundle import layout as bundle_layout  # pylint: disable=g-import-not-at-top
  newest = bundle_layout.versions(serving_dir)[-1]
  version = max(int(time.time()), newest + 1)
  work = os.path.join(serving_dir, f"{bundle_layout.TEMP_PREFIX}{version}-{os.getpid()}")
  shutil.copytree(bundle_layout.version_dir(serving_dir, newest), work)
  manifest_path = os.path.join(work, bundle_layout.MANIFEST_FILE)
  with open(manifest_path) as f:
    manifest = json.load(f)
  manifest["version"] = version
  manifest["files"] = bundle_layout.file_list(work)
  with open(manifest_path, "w") as f:
    json.dump(manifest, f)
  os.rename(work, bundle_layout.version_dir(serving_dir, version))
  return version


def http_load(serving_dir, users, seconds, connections, push_every=0, workers=1,
              order_by=None):
  """(load generator result, soak details) of `movrec serve` under load for `seconds`."""
  port = free_port()
  server = subprocess.Popen(
      [os.path.join(os.path.dirname(sys.executable), "movrec"), "serve", "--serving-dir",
       serving_dir, "--port", str(port), "--workers", str(workers)],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  soak = {"pushed": []}
  try:
    for _ in range(600):  # until every worker listens
      if workers_lib.listening_sockets(port) == workers:
        break
      time.sleep(0.1)
    load = subprocess.Popen(
        [sys.executable, "-m", "bench.load_generator", f"http://127.0.0.1:{port}",
         "--seconds", str(seconds), "--connections", str(connections), "--users", users]
        + (["--order-by", order_by] if order_by else []),
        stdout=subprocess.PIPE, text=True)
    if push_every:
      time.sleep(min(10.0, push_every / 2))  # warm-up before the baseline reading
      soak["rss_start"] = rss_bytes(server.pid)
      deadline = time.monotonic() + seconds - 10
      next_push = time.monotonic() + push_every
      while load.poll() is None and time.monotonic() < deadline:
        if time.monotonic() >= next_push:
          soak["pushed"].append(publish_copy(serving_dir))
          next_push += push_every
        time.sleep(0.5)
      soak["rss_end"] = rss_bytes(server.pid)
      with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        soak["served"] = json.loads(r.read())["version"]
    out, _ = load.communicate()
    result = json.loads(out.strip().splitlines()[-1])
  finally:
    server.terminate()
    server.wait(timeout=30)
  return result, soak


if __name__ == "__main__":
  sys.exit(main())
