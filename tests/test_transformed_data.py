"""Training input from Transform's output: the whole split as columns, gathered per batch."""
import numpy as np
import tensorflow as tf

from modules import transformed_data

SPEC = {"id": tf.io.FixedLenFeature([], tf.int64),
        "score": tf.io.FixedLenFeature([], tf.float32),
        "tags": tf.io.VarLenFeature(tf.int64)}


def write_examples(path, n):
  """n Examples: id i, score i / 2, tags [i % 5 ones...] (0 to 4 of them)."""
  with tf.io.TFRecordWriter(path, options="GZIP") as writer:
    for i in range(n):
      example = tf.train.Example(features=tf.train.Features(feature={
          "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
          "score": tf.train.Feature(float_list=tf.train.FloatList(value=[i / 2])),
          "tags": tf.train.Feature(int64_list=tf.train.Int64List(value=[i] * (i % 5))),
      }))
      writer.write(example.SerializeToString())


def rows_of(batch):
  tags = tf.sparse.to_dense(batch["tags"], default_value=-1).numpy()
  return [(int(i), float(s), tuple(int(t) for t in row if t >= 0))
          for i, s, row in zip(batch["id"].numpy(), batch["score"].numpy(), tags)]


def test_every_epoch_holds_every_example_once_in_a_new_order(tmp_path):
  path = str(tmp_path / "part.gz")
  write_examples(path, 1000)
  expected = {(i, i / 2, (i,) * (i % 5)) for i in range(1000)}
  ds = transformed_data.dataset(path, SPEC, 64, shuffle=True, seed=1)
  orders = []
  for _ in range(2):
    rows = [row for batch in ds for row in rows_of(batch)]
    assert len(rows) == 1000 and set(rows) == expected  # sparse tags intact, row by row
    orders.append([row[0] for row in rows])
  assert orders[0] != orders[1] and orders[0] != sorted(orders[0])
  # Unshuffled, the same rows in file order as parsing batch by batch without the columns.
  streamed = [row for b in transformed_data.dataset(path, SPEC, 64, cache=False) for row in rows_of(b)]
  cached = [row for b in transformed_data.dataset(path, SPEC, 64) for row in rows_of(b)]
  assert cached == streamed == sorted(expected)


def test_keep_drops_examples_before_they_are_columns(tmp_path):
  path = str(tmp_path / "part.gz")
  write_examples(path, 300)
  keep = lambda example: example["id"] % 3 == 0
  ids = np.concatenate([b["id"].numpy() for b in
                        transformed_data.dataset(path, SPEC, 50, shuffle=True, keep=keep)])
  assert sorted(ids.tolist()) == list(range(0, 300, 3))
