"""Keras' training and evaluation steps traced without AutoGraph.

`Model.fit` and `evaluate` trace their step with AutoGraph, which converts the code of
every loss, metric, optimizer and layer they reach. None of this project's models branch
on a tensor in Python, so the conversion buys nothing and costs seconds: training on the
tests' synthetic data took 18 s -> 6 s (ranking) and 9 s -> 6 s (retrieval), with the
same losses to the last digit. The models' own `call` and `compute_loss` are marked the
same way.
"""

import tensorflow as tf


class StepsWithoutAutoGraph:
  """Mixin, before the Keras model class: `class M(StepsWithoutAutoGraph, tf.keras.Model)`."""

  @tf.autograph.experimental.do_not_convert
  def train_step(self, data):
    return super().train_step(data)

  @tf.autograph.experimental.do_not_convert
  def test_step(self, data):
    return super().test_step(data)
