"""Adam whose sparse updates touch only the rows a batch looked up (a "lazy" Adam).

tf_keras' Adam, given an embedding table's sparse gradient (tf.IndexedSlices), decays
both moment tables and rewrites the whole table every step, so a step costs in
proportion to the number of users and movies, not to the batch: with 28,600 users a
toy step measured 9.8 ms against 5.3 ms here, with 286,000 users 92.4 ms against 5.9 ms
(BENCHMARKS.md, "A lazy Adam"). This is TF Addons' LazyAdam on tf_keras' optimizer: the
looked-up rows get Adam's update, the other rows, their moments included, stay as they
were until they are next looked up. Dense gradients (the towers' dense layers) get
tf_keras' Adam unchanged.
"""

import tensorflow as tf


class LazyAdam(tf.keras.optimizers.Adam):
  """tf.keras.optimizers.Adam, but sparse gradients update only their rows."""

  def update_step(self, gradient, variable):
    if not isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
      return super().update_step(gradient, variable)
    # apply_gradients has already summed duplicate indices (_deduplicate_sparse_grad).
    dtype = variable.dtype
    step = tf.cast(self.iterations + 1, dtype)
    beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
    alpha = (tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, step)) /
             (1 - tf.pow(beta_1, step)))
    epsilon = (self.epsilon * tf.sqrt(1 - tf.pow(beta_2, step)) if self.adaptive_epsilon
               else self.epsilon)
    key = self._var_key(variable)
    m = self._momentums[self._index_dict[key]]
    v = self._velocities[self._index_dict[key]]
    rows = gradient.indices
    m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * gradient.values
    v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(gradient.values)
    m.scatter_update(tf.IndexedSlices(m_rows, rows))
    v.scatter_update(tf.IndexedSlices(v_rows, rows))
    variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + epsilon),
                                          rows))
