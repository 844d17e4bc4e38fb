"""LazyAdam against a NumPy reading of the update it promises (modules/lazy_adam.py)."""

import numpy as np
import tensorflow as tf

from modules import hparams
from modules.lazy_adam import LazyAdam

LR, B1, B2, EPS = 0.01, 0.9, 0.999, 1e-7


def _train(optimizer, batches, table, dense):
  """Runs one step per batch of row ids on loss = sum(w · table[ids]) + sum(dense²)."""
  table, dense = tf.Variable(table), tf.Variable(dense)
  weights = tf.constant(np.linspace(-1.0, 2.0, table.shape[1]), tf.float32)
  for ids in batches:
    with tf.GradientTape() as tape:
      loss = (tf.reduce_sum(tf.gather(table, ids) * weights) +
              tf.reduce_sum(tf.square(dense)))
    grads = tape.gradient(loss, [table, dense])
    assert isinstance(grads[0], tf.IndexedSlices)
    optimizer.apply_gradients(zip(grads, [table, dense]))
  return table.numpy(), dense.numpy(), weights.numpy()


def _reference(batches, table, dense, weights):
  """The update row by row: a looked-up row's moments decay and it moves; other rows,
  moments included, are left alone; dense variables get plain Adam."""
  table, dense = table.astype(np.float64).copy(), dense.astype(np.float64).copy()
  m, v = np.zeros_like(table), np.zeros_like(table)
  dm, dv = np.zeros_like(dense), np.zeros_like(dense)
  for step, ids in enumerate(batches, start=1):
    alpha = LR * np.sqrt(1 - B2 ** step) / (1 - B1 ** step)
    rows, counts = np.unique(ids, return_counts=True)
    grad = counts[:, None] * weights[None, :]  # a row looked up twice gets twice the gradient
    m[rows] = B1 * m[rows] + (1 - B1) * grad
    v[rows] = B2 * v[rows] + (1 - B2) * grad ** 2
    table[rows] -= alpha * m[rows] / (np.sqrt(v[rows]) + EPS)
    g = 2 * dense
    dm = B1 * dm + (1 - B1) * g
    dv = B2 * dv + (1 - B2) * g ** 2
    dense -= alpha * dm / (np.sqrt(dv) + EPS)
  return table, dense


def test_only_looked_up_rows_move_and_their_update_is_adams():
  rng = np.random.default_rng(0)
  table = rng.normal(size=(20, 4)).astype(np.float32)
  dense = rng.normal(size=(3,)).astype(np.float32)
  batches = [np.array([1, 3, 3, 7]), np.array([3, 9]), np.array([1, 12, 12, 12]),
             np.array([7])]
  got_table, got_dense, weights = _train(
      LazyAdam(learning_rate=LR, beta_1=B1, beta_2=B2, epsilon=EPS), batches, table, dense)
  want_table, want_dense = _reference(batches, table, dense, weights)
  np.testing.assert_allclose(got_table, want_table, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got_dense, want_dense, rtol=1e-5, atol=1e-6)
  never = [r for r in range(20) if r not in {1, 3, 7, 9, 12}]
  np.testing.assert_array_equal(got_table[never], table[never])


def test_tf_keras_adam_moves_rows_the_batch_did_not_touch():
  """Why LazyAdam exists: the stock optimizer updates the whole table every step (row 1
  keeps moving on its old momentum at the steps that do not look it up)."""
  table = np.ones((5, 2), np.float32)
  batches = [np.array([1]), np.array([2]), np.array([2])]
  stock, _, _ = _train(tf.keras.optimizers.Adam(learning_rate=LR), batches, table,
                       np.zeros(1, np.float32))
  lazy, _, _ = _train(LazyAdam(learning_rate=LR), batches, table, np.zeros(1, np.float32))
  after_one, _, _ = _train(LazyAdam(learning_rate=LR), batches[:1], table,
                           np.zeros(1, np.float32))
  np.testing.assert_array_equal(lazy[1], after_one[1])
  assert np.abs(stock[1] - after_one[1]).max() > 1e-4


def test_make_optimizer_knows_lazy_adam():
  assert isinstance(hparams.make_optimizer("lazy_adam", 0.1), LazyAdam)
