"""Transformed features of every movie seen in training, for catalogue-sampled negatives.

In-batch softmax only ever contrasts a positive with other positives of the batch, so
rarely rated movies are rarely negatives. Mixed negative sampling (Yang et al. 2020)
adds movies drawn uniformly from the catalogue to every batch; this table holds their
features so the candidate tower can embed them in the training step.
"""

from typing import Dict, Sequence

import numpy as np
import tensorflow as tf

from modules import transformed_data


def collect(patterns, feature_spec, id_feature: str, features: Sequence[str]) -> Dict:
  """{feature: list of per-movie values (lists for variable-length ones)}, first occurrence."""
  names = [id_feature] + [f for f in features if f != id_feature and f in feature_spec]
  spec = {name: feature_spec[name] for name in names}
  seen, rows = set(), {name: [] for name in names}
  ds = tf.data.TFRecordDataset(transformed_data.expand(patterns), compression_type="GZIP")
  for batch in ds.batch(8192):
    parsed = tf.io.parse_example(batch, spec)
    ids = parsed[id_feature].numpy().reshape(-1)
    _, first = np.unique(ids, return_index=True)
    new = np.array([i for i in first if ids[i] not in seen], dtype=np.int64)
    if not len(new):
      continue
    seen.update(int(ids[i]) for i in new)
    for name in names:
      value = parsed[name]
      if isinstance(value, tf.SparseTensor):
        rows[name].extend(tf.gather(tf.RaggedTensor.from_sparse(value), new).to_list())
      else:
        rows[name].extend(value.numpy()[new].reshape(len(new), -1)[:, 0].tolist())
  return rows


class MovieTable(tf.Module):
  """The collected movies as variables; `sample(n)` draws n of them without replacement."""

  def __init__(self, rows: Dict, id_feature: str):
    super().__init__()
    self.id_feature = id_feature
    self.dense, self.ragged = {}, {}
    for name, values in rows.items():
      if values and isinstance(values[0], list):
        r = tf.ragged.constant(values, dtype=tf.int64)
        self.ragged[name] = (tf.Variable(r.values, trainable=False),
                             tf.Variable(r.row_splits, trainable=False))
      else:
        dtype = tf.int64 if name == id_feature or isinstance(values[0], int) else tf.float32
        self.dense[name] = tf.Variable(np.array(values).reshape(-1, 1), dtype=dtype,
                                       trainable=False)
    self.size = len(rows[id_feature])

  def sample(self, n: int):
    """(features dict shaped like a training batch, their movie ids [n'])."""
    rows = tf.random.shuffle(tf.range(self.size))[:n]
    out = {name: tf.gather(v, rows) for name, v in self.dense.items()}
    for name, (values, splits) in self.ragged.items():
      ragged = tf.RaggedTensor.from_row_splits(values, splits, validate=False)
      out[name] = tf.gather(ragged, rows).to_sparse()
    return out, tf.reshape(out[self.id_feature], [-1])
