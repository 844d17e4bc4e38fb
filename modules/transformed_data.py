"""Reading Transform's output (gzipped TFRecords of transformed tf.Examples) for training."""

import os
from typing import Dict, Iterable, List, Union

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top


def expand(patterns: Union[str, Iterable[str]]) -> List[str]:
  """Files matching TFX file patterns (a split directory's `*` glob or explicit files)."""
  patterns = [patterns] if isinstance(patterns, str) else list(patterns)
  files = sorted(f for p in patterns for f in tf.io.gfile.glob(p))
  if not files:
    raise FileNotFoundError(f"no transformed examples match {patterns}")
  return files


def dataset(patterns, feature_spec, batch_size: int, shuffle: bool = False, seed: int = 0,
            cache: bool = True) -> tf.data.Dataset:
  """Batches of transformed features (dicts of dense / sparse tensors).

  The parsed data is cached in memory after the first epoch; shuffling happens after
  the cache, so each epoch sees a new order.
  """
  ds = tf.data.TFRecordDataset(expand(patterns), compression_type="GZIP")
  ds = ds.batch(4096).map(lambda x: tf.io.parse_example(x, feature_spec),
                          num_parallel_calls=tf.data.AUTOTUNE).unbatch()
  if cache:
    ds = ds.cache()
  if shuffle:
    ds = ds.shuffle(200_000, seed=seed, reshuffle_each_iteration=True)
  return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def columns(patterns, feature_spec, names) -> Dict[str, np.ndarray]:
  """Dense scalar transformed features of every example, as numpy vectors."""
  ds = tf.data.TFRecordDataset(expand(patterns), compression_type="GZIP").batch(8192)
  spec = {name: feature_spec[name] for name in names}
  parts = {name: [] for name in names}
  for batch in ds:
    parsed = tf.io.parse_example(batch, spec)
    for name in names:
      parts[name].append(parsed[name].numpy().reshape(-1))
  return {name: np.concatenate(values) for name, values in parts.items()}
