"""The console's progress lines: components, Trainer epochs, and the running ticker."""
import io
import logging
import re

import numpy as np
import tensorflow as tf

from modules import training_progress
from pipeline import progress


def record(message: str) -> logging.LogRecord:
  return logging.LogRecord("absl", logging.INFO, __file__, 0, message, None, None)


def test_reporter_prints_components_epochs_and_ticks():
  out = io.StringIO()
  reporter = progress.ProgressReporter(total=3, out=out)
  reporter.emit(record("Component Transform is running."))
  assert reporter.current == "Transform"
  reporter.tick()
  reporter.emit(record("Component Transform is finished."))
  reporter.emit(record("Component RetrievalTrainer is running."))
  reporter.emit(record(training_progress.PREFIX + "RetrievalTrainer epoch 1/2, 10 examples/s, "
                       "ETA 3s"))
  reporter.emit(record("something TFX says"))
  reporter.emit(record("A cached execution 7 is used."))
  reporter.emit(record("Component RetrievalTrainer is finished."))
  reporter.tick()  # nothing running: no line
  lines = out.getvalue().splitlines()
  assert re.fullmatch(r"\s+Transform running for \d+s", lines[0])
  assert re.fullmatch(r"\[ 1/3\] Transform\.+ done\s+\d+\.\d s", lines[1])
  assert lines[2].strip() == "RetrievalTrainer epoch 1/2, 10 examples/s, ETA 3s"
  assert re.fullmatch(r"\[ 2/3\] RetrievalTrainer\.+ cached\s+\d+\.\d s", lines[3])
  assert len(lines) == 4


class Collect(logging.Handler):
  def __init__(self):
    super().__init__(level=logging.INFO)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


def test_epoch_callback_logs_each_epoch_with_an_eta():
  # On absl's logger, where the console's reporter listens (pipeline/progress.py).
  absl_logger = logging.getLogger("absl")
  collect, saved_level = Collect(), absl_logger.level
  absl_logger.addHandler(collect)
  absl_logger.setLevel(logging.INFO)
  try:
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((32, 2), np.float32)
    model.fit(x, x[:, :1], epochs=3, verbose=0, callbacks=[
        training_progress.epoch_callback("RankingTrainer", 3, 32, part=1, parts=2)])
  finally:
    absl_logger.removeHandler(collect)
    absl_logger.setLevel(saved_level)
  lines = [m for m in collect.messages if m.startswith(training_progress.PREFIX)]
  assert len(lines) == 3
  assert re.fullmatch(re.escape(training_progress.PREFIX) +
                      r"RankingTrainer member 1/2 epoch 3/3, [\d,]+ examples/s, ETA \d+s",
                      lines[-1])
  assert training_progress.duration(75) == "1m 15s" and training_progress.duration(9) == "9s"
