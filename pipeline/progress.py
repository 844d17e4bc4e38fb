"""Readable output for local runs: one line per component, TFX's own logs to a file.

TFX, Beam and TensorFlow log a great deal, partly from C++ straight to file descriptor 2.
During a run, Python logging and fd 2 both go to a log file; the LocalDagRunner's own
"Component X is running / is finished" records become progress lines on stdout, the
Trainers' epoch records (modules/training_progress.py) lines under them, and on a
terminal a ticker says every `tick_seconds` which component is running and for how long.
"""

import contextlib
import logging
import os
import re
import sys
import threading
import time
from typing import Dict, Iterator, Optional, TextIO

from absl import logging as absl_logging

from modules import training_progress

_RUNNING = re.compile(r"^Component (\S+) is running\.$")
_FINISHED = re.compile(r"^Component (\S+) is finished\.$")
_CACHED = re.compile(r"^A cached execution \d+ is used\.$")


class ProgressReporter(logging.Handler):
  """Turns the local runner's log records into '[ 3/9] Name ..... done 1.2 s' lines."""

  def __init__(self, total: int, out: TextIO):
    super().__init__(level=logging.INFO)
    self._total = total
    self._out = out
    self._current: Optional[str] = None
    self._started = 0.0
    self._cached = False
    self._write_lock = threading.Lock()
    self.states: Dict[str, str] = {}  # reported components, in order

  @property
  def current(self) -> Optional[str]:
    """The component running now (None between components)."""
    return self._current

  def emit(self, record: logging.LogRecord) -> None:
    message = record.getMessage()
    if match := _RUNNING.match(message):
      self._current, self._started, self._cached = match.group(1), time.monotonic(), False
    elif _CACHED.match(message):
      self._cached = True
    elif match := _FINISHED.match(message):
      self.report(match.group(1), "cached" if self._cached else "done",
                  time.monotonic() - self._started)
      self._current = None
    elif message.startswith(training_progress.PREFIX):
      self.line(f"        {message[len(training_progress.PREFIX):]}")

  def tick(self) -> None:
    """A 'still running' line for the current component (the ticker calls this)."""
    if self._current is not None:
      self.line(f"        {self._current} running for "
                 f"{training_progress.duration(time.monotonic() - self._started)}")

  def line(self, text: str) -> None:
    with self._write_lock:
      self._out.write(text + "\n")
      self._out.flush()

  def report(self, name: str, state: str, seconds: float) -> None:
    self.states[name] = state
    n = len(self.states)
    self.line(f"[{n:>2}/{self._total}] {name:.<32} {state:<6} {seconds:6.1f} s")


@contextlib.contextmanager
def stderr_to_file(log_path: str) -> Iterator[None]:
  """File descriptor 2 (Python warnings, TensorFlow's C++ logs) appended to `log_path`."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  sys.stderr.flush()
  saved_stderr = os.dup(2)
  log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  os.dup2(log_fd, 2)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved_stderr, 2)
    os.close(saved_stderr)
    os.close(log_fd)


@contextlib.contextmanager
def tfx_logs_to_file(log_path: str, total_components: int, out: TextIO = sys.stdout,
                     tick_seconds: float = 30.0) -> Iterator[ProgressReporter]:
  """Within the block, all logs go to `log_path`; progress lines go to `out` (with a
  'still running' line every tick_seconds when `out` is a terminal)."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  root = logging.getLogger()
  saved_handlers, saved_level = root.handlers[:], root.level
  file_handler = logging.FileHandler(log_path)
  file_handler.setFormatter(logging.Formatter(
      "%(asctime)s %(levelname)s %(name)s: %(message)s"))
  reporter = ProgressReporter(total_components, out)
  root.handlers = [file_handler]
  root.setLevel(logging.INFO)
  # TFX logs through absl's "absl" logger; the reporter sits on it. Its level is set
  # through absl's verbosity flag, not setLevel: TensorFlow, when it saves a model
  # (Transform's graph first), silences absl and then restores the *flag's* value, which
  # would otherwise be WARNING: every INFO record after that (component lines included)
  # was lost.
  absl_logger = logging.getLogger("absl")
  saved_verbosity = absl_logging.get_verbosity()
  absl_logger.addHandler(reporter)
  absl_logging.set_verbosity(absl_logging.INFO)
  stop = threading.Event()
  ticker = None
  if getattr(out, "isatty", lambda: False)():
    def tick():
      while not stop.wait(tick_seconds):
        reporter.tick()
    ticker = threading.Thread(target=tick, name="progress-ticker", daemon=True)
    ticker.start()
  try:
    with stderr_to_file(log_path):
      yield reporter
  finally:
    stop.set()
    if ticker is not None:
      ticker.join(timeout=1)
    file_handler.close()
    absl_logger.removeHandler(reporter)
    absl_logging.set_verbosity(saved_verbosity)
    root.handlers, root.level = saved_handlers, saved_level
