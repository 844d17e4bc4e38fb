"""The root object of an exported SavedModel that holds a Keras model's weights only."""

import tensorflow as tf


class KerasWeights(tf.Module):
  """What an export saves of a Keras model: its variables, which the exported functions
  capture, and whatever the exporter adds as attributes (tables, Transform's layer). Not
  the Keras model itself: Keras would trace every layer's call into the SavedModel too
  (seconds an export, on any data: BENCHMARKS.md, sessions 36 and 39), and the readers
  (TFX's Evaluator, serving, the TensorFlow Lite converter) need only the signatures. `model` is there for the
  functions to call; it is not saved."""

  def __init__(self, model: tf.keras.Model):
    super().__init__()
    self.model = self._no_dependency(model)
    self.weights = list(model.variables)
