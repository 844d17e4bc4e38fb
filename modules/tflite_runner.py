"""A TensorFlow Lite model's default signature, callable from any thread."""

import threading

import tensorflow as tf


class TfliteRunner:
  """Calls the flatbuffer's default signature with NumPy inputs; returns its outputs.
  An interpreter is not thread-safe: each calling thread gets its own (a few hundred KB)."""

  def __init__(self, path: str):
    with open(path, "rb") as f:
      self._flatbuffer = f.read()
    self._local = threading.local()

  def __call__(self, **inputs):
    runner = getattr(self._local, "runner", None)
    if runner is None:
      runner = tf.lite.Interpreter(model_content=self._flatbuffer).get_signature_runner()
      self._local.runner = runner
    return runner(**inputs)
