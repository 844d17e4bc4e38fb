"""Epoch progress of a Trainer as log records the console turns into lines.

The Trainers run inside TFX's executor, whose output goes to the run's log file; a record
starting with PREFIX is also shown on the console by pipeline/progress.py:

  movrec progress: RetrievalTrainer epoch 3/10, 4,512 examples/s, ETA 1m 40s

TensorFlow is imported only by `epoch_callback`, so the console can import this module
for PREFIX without loading it.
"""

import time

from absl import logging

PREFIX = "movrec progress: "


def duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def epoch_callback(trainer: str, epochs: int, examples_per_epoch: int, part: int = 1,
                   parts: int = 1):
  """A Keras callback logging epoch k/N, examples per second and the time left after
  every epoch. `part`/`parts` count sequential fits of one Trainer (ensemble members),
  so that the ETA covers the whole Trainer."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  class EpochProgress(tf.keras.callbacks.Callback):

    def on_train_begin(self, logs=None):
      self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
      done = epoch + 1
      per_epoch = (time.monotonic() - self.started) / done
      left = per_epoch * ((epochs - done) + (parts - part) * epochs)
      member = f" member {part}/{parts}" if parts > 1 else ""
      logging.info("%s%s%s epoch %d/%d, %s examples/s, ETA %s", PREFIX, trainer, member,
                   done, epochs, f"{examples_per_epoch / per_epoch:,.0f}", duration(left))

  return EpochProgress()
