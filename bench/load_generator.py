"""HTTP load generator, run as its own process: N keep-alive connections for D seconds.

  python -m bench.load_generator http://127.0.0.1:8080 --seconds 60 --connections 8 \
      --users 1,2,3 [--order-by ranking_score]
Prints one JSON line: requests, errors, requests_per_second, latency p50/p99 (ms).
"""

import argparse
import http.client
import json
import random
import sys
import threading
import time
from urllib.parse import urlparse


def worker(host, port, users, deadline, latencies, errors, seed, order_by=None):
  rng = random.Random(seed)
  conn = http.client.HTTPConnection(host, port, timeout=10)
  while time.monotonic() < deadline:
    body = json.dumps({"user_id": rng.choice(users), "k": 10,
                       **({"order_by": order_by} if order_by else {})})
    started = time.perf_counter()
    try:
      conn.request("POST", "/recommend", body, {"Content-Type": "application/json"})
      response = conn.getresponse()
      response.read()
      if response.status != 200:
        errors.append(response.status)
    except (OSError, http.client.HTTPException) as e:
      errors.append(repr(e))
      conn.close()
      conn = http.client.HTTPConnection(host, port, timeout=10)
    latencies.append(time.perf_counter() - started)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("url")
  parser.add_argument("--seconds", type=float, default=60)
  parser.add_argument("--connections", type=int, default=8)
  parser.add_argument("--users", required=True, help="comma-separated user ids")
  parser.add_argument("--order-by", help="the requests' order_by (default: the bundle's)")
  args = parser.parse_args(argv)
  url = urlparse(args.url)
  users = args.users.split(",")
  latencies, errors = [], []
  deadline = time.monotonic() + args.seconds
  threads = [threading.Thread(target=worker, args=(url.hostname, url.port, users, deadline,
                                                   latencies, errors, i, args.order_by))
             for i in range(args.connections)]
  started = time.monotonic()
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  elapsed = time.monotonic() - started
  ordered = sorted(latencies)
  pct = lambda p: 1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0
  print(json.dumps({"requests": len(latencies), "errors": len(errors),
                    "error_samples": [str(e) for e in errors[:5]],
                    "seconds": round(elapsed, 1),
                    "requests_per_second": round(len(latencies) / elapsed, 1),
                    "p50_ms": round(pct(0.5), 2), "p99_ms": round(pct(0.99), 2)}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
