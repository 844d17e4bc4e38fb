"""The HTTP service in several processes on one port (`movrec serve --workers N`).

One process tops out at about 1.3 cores: the models' Python side runs on its GIL
(BENCHMARKS.md, "Serving"). Here each worker is a process of its own with its own bundle
(memory grows by one bundle per worker) and its own poll for new versions; every
response names the version that answered it.

Each worker binds the port with SO_REUSEPORT, so the kernel spreads connections across
them. With uvicorn's own `workers=` (one listening socket shared by all), the first
worker to wake accepted nearly every connection: 2,751 of 3,025 requests from 8
keep-alive connections went to one of two workers.

The parent starts the workers, starts another when one dies, and stops them all on
SIGINT / SIGTERM, or when a worker cannot start (no valid bundle, port taken), which a
new one would not fix either.
"""

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import threading
from typing import Dict, List, Optional

from prometheus_client import multiprocess

from bundle import layout as bundle_layout
from bundle.layout import BundleNotFoundError
from serving.exposure import MULTIPROC_DIR_ENV, check_exposure

log = logging.getLogger("movrec.workers")

STARTUP_FAILURE = 3  # a worker's exit code when starting again would fail the same way
_STOP_SECONDS = 15   # how long a worker gets to finish its requests when stopped


def serve(serving_dir: str, workers: int, host: str = "127.0.0.1", port: int = 8080,
          poll_seconds: float = 2.0, token: Optional[str] = None, docs: bool = False) -> int:
  """Runs `workers` processes until interrupted; the exit code (0, or STARTUP_FAILURE)."""
  check_exposure(host, token)
  first_valid_version(serving_dir)  # fail here, before any worker loads TensorFlow
  config = {"serving_dir": serving_dir, "host": host, "port": port,
            "poll_seconds": poll_seconds, "token": token, "docs": docs}
  previous = os.environ.get(MULTIPROC_DIR_ENV)
  with tempfile.TemporaryDirectory(prefix="movrec-metrics-") as metrics_dir:
    # Read by prometheus_client when a worker imports it: set before any starts.
    os.environ[MULTIPROC_DIR_ENV] = metrics_dir
    try:
      return _supervise(config, workers)
    finally:
      if previous is None:
        os.environ.pop(MULTIPROC_DIR_ENV, None)
      else:
        os.environ[MULTIPROC_DIR_ENV] = previous


def _supervise(config: Dict, workers: int) -> int:
  context = multiprocessing.get_context("spawn")  # no TensorFlow state copied by fork
  stop = threading.Event()
  handlers = {sig: signal.signal(sig, lambda *_: stop.set())
              for sig in (signal.SIGINT, signal.SIGTERM)}

  def start():
    process = context.Process(target=_worker, args=(config,), daemon=False)
    process.start()
    return process

  processes: List = [start() for _ in range(workers)]
  code = 0
  try:
    while not stop.wait(0.5):
      for i, process in enumerate(processes):
        if process.is_alive() or stop.is_set():
          continue
        multiprocess.mark_process_dead(process.pid)  # its live gauges leave /metrics
        if process.exitcode == STARTUP_FAILURE:
          log.error("worker %s could not start (see its error above); stopping",
                    process.pid)
          code = STARTUP_FAILURE
          stop.set()
          break
        log.warning("worker %s exited with code %s; starting another", process.pid,
                    process.exitcode)
        processes[i] = start()
  finally:
    for process in processes:
      if process.is_alive():
        process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
    for process in processes:
      process.join(timeout=_STOP_SECONDS)
      if process.is_alive():
        process.kill()
        process.join()
    for sig, handler in handlers.items():
      signal.signal(sig, handler)
  return code


def _worker(config: Dict) -> None:
  """One worker process: its own bundle, its own socket on the shared port."""
  # Here, not at the top: the supervisor imports this module and must not load TensorFlow.
  import uvicorn  # pylint: disable=g-import-not-at-top
  from serving import http_service  # pylint: disable=g-import-not-at-top
  with contextlib.ExitStack() as stack:
    try:
      sock = _listen(config["host"], config["port"])
      app = stack.enter_context(http_service.live_app(
          config["serving_dir"], config["poll_seconds"], config["token"], config["docs"]))
    except (OSError, BundleNotFoundError) as e:
      log.error("worker %s: %s", os.getpid(), e)
      sys.exit(STARTUP_FAILURE)
    stack.callback(multiprocess.mark_process_dead, os.getpid())
    uvicorn.Server(uvicorn.Config(app, **http_service.UVICORN_OPTIONS)).run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
  # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on connections whose
  # socket says TCP, and without it Nagle's algorithm held responses back (p50 56 ms
  # instead of 28 ms; uvicorn's own `workers=` socket has the same problem).
  sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                       socket.IPPROTO_TCP)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
  sock.bind((host, port))
  return sock


def listening_sockets(port: int) -> int:
  """How many sockets listen on the IPv4 `port` (Linux). A worker binds its socket before
  it loads its bundle but listens only once it serves: this says when all of them do."""
  with open("/proc/net/tcp") as f:
    rows = [line.split() for line in f.readlines()[1:]]
  # local_address is HEX_IP:HEX_PORT; state 0A is LISTEN.
  return sum(1 for row in rows if int(row[1].split(":")[1], 16) == port and row[3] == "0A")


def first_valid_version(serving_dir: str) -> int:
  """The version a worker would start on (the pinned one, else the newest whose files
  match its manifest), checked without loading it; BundleNotFoundError if none."""
  reasons = []
  for version in bundle_layout.versions_to_serve(serving_dir):
    try:
      bundle_layout.verify(bundle_layout.version_dir(serving_dir, version))
      return version
    except (bundle_layout.InvalidBundleError, OSError, ValueError) as e:
      reasons.append(f"{version}: {e}")
  raise BundleNotFoundError(f"no valid bundle under {serving_dir} "
                            f"({'; '.join(reasons) or 'none pushed'})")
