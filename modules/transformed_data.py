"""Reading Transform's output (gzipped TFRecords of transformed tf.Examples) for training."""

from typing import Dict, Iterable, List, Union

import numpy as np
import tensorflow as tf

from modules import features as F

_xf = F.transformed_name


def expand(patterns: Union[str, Iterable[str]]) -> List[str]:
  """Files matching TFX file patterns (a split directory's `*` glob or explicit files)."""
  patterns = [patterns] if isinstance(patterns, str) else list(patterns)
  files = sorted(f for p in patterns for f in tf.io.gfile.glob(p))
  if not files:
    raise FileNotFoundError(f"no transformed examples match {patterns}")
  return files


def dataset(patterns, feature_spec, batch_size: int, shuffle: bool = False, seed: int = 0,
            cache: bool = True, label_key: str = None, keep=None) -> tf.data.Dataset:
  """Batches of transformed features (dicts of dense / sparse tensors); with `keep`
  (parsed example -> scalar bool tensor), only the examples it accepts.

  With `cache`, the split is parsed once into one tensor per feature (`load_columns`) and
  each batch gathers its rows, in a new order every epoch when shuffling. At 1M ratings
  this took the ranking Trainer's peak from 4,175 to 1,991 MiB at the same speed: tf.data's
  cache of single parsed examples kept ~15 small tensors per rating (BENCHMARKS.md, "Scale").
  """
  if cache:
    return batches(load_columns(patterns, feature_spec, keep), batch_size, shuffle, seed,
                   label_key)
  return _labelled(_parsed(patterns, feature_spec, keep).batch(batch_size), label_key)


def batches(columns: Dict[str, tf.Tensor], batch_size: int, shuffle: bool = False,
            seed: int = 0, label_key: str = None) -> tf.data.Dataset:
  """`dataset` over columns already loaded (`load_columns`): each batch gathers its rows,
  in a new order every epoch when shuffling."""
  num_rows = _num_rows(columns)
  rows = (_shuffled_batches(num_rows, batch_size, seed) if shuffle
          else tf.data.Dataset.range(num_rows).batch(batch_size))
  return _labelled(rows.map(lambda index: _take(columns, index),
                            num_parallel_calls=tf.data.AUTOTUNE), label_key)


def _labelled(ds: tf.data.Dataset, label_key: str = None) -> tf.data.Dataset:
  if label_key:  # (features, label) pairs for Keras' compiled losses
    ds = ds.map(lambda f: ({k: v for k, v in f.items() if k != label_key}, f[label_key]))
  return ds.prefetch(tf.data.AUTOTUNE)


def _shuffled_batches(num_rows: int, batch_size: int, seed: int) -> tf.data.Dataset:
  """Batches of row indices, a new permutation of all rows every iteration (epoch),
  the same sequence of permutations for the same seed. The permutation is one int64
  tensor: a tf.data shuffle buffer of every row index instead held ~190 bytes per row
  (1.5 GiB at 8M ratings)."""
  epoch_seeds = tf.data.Dataset.random(seed, rerandomize_each_iteration=True).take(1)
  return epoch_seeds.flat_map(lambda s: tf.data.Dataset.from_tensor_slices(
      tf.random.experimental.stateless_shuffle(tf.range(num_rows, dtype=tf.int64),
                                               seed=tf.stack([s, 0]))).batch(batch_size))


def _parsed(patterns, feature_spec, keep=None) -> tf.data.Dataset:
  """Single parsed examples (parsed in batches), those `keep` accepts."""
  ds = tf.data.TFRecordDataset(expand(patterns), compression_type="GZIP")
  ds = ds.batch(4096).map(lambda x: tf.io.parse_example(x, feature_spec),
                          num_parallel_calls=tf.data.AUTOTUNE).unbatch()
  return ds.filter(keep) if keep is not None else ds


def load_columns(patterns, feature_spec, keep=None) -> Dict[str, tf.Tensor]:
  """Every example of the files as one tensor per feature: dense features [n, ...],
  variable-length ones as RaggedTensors [n, None]."""
  if keep is None:
    ds = tf.data.TFRecordDataset(expand(patterns), compression_type="GZIP").batch(8192).map(
        lambda x: tf.io.parse_example(x, feature_spec), num_parallel_calls=tf.data.AUTOTUNE)
  else:
    ds = _parsed(patterns, feature_spec, keep).batch(8192)
  parts = {name: [] for name in feature_spec}
  for batch in ds:
    for name, value in batch.items():
      parts[name].append(tf.RaggedTensor.from_sparse(value)
                         if isinstance(value, tf.SparseTensor) else value)
  if not parts or not next(iter(parts.values())):
    raise ValueError(f"no examples in {patterns}" + (" that are kept" if keep else ""))
  return {name: tf.concat(values, axis=0) for name, values in parts.items()}


def _num_rows(columns) -> int:
  column = next(iter(columns.values()))
  return int(column.nrows() if isinstance(column, tf.RaggedTensor) else column.shape[0])


def _take(columns, index):
  """The rows `index` of every column; ragged ones as SparseTensors, as parsing gives them."""
  return {name: (tf.gather(column, index).to_sparse() if isinstance(column, tf.RaggedTensor)
                 else tf.gather(column, index)) for name, column in columns.items()}


def before_cutoffs(cutoffs: np.ndarray, user_key: str, seconds_key: str):
  """A `keep` for `dataset`: examples made before their user's cutoff (unix seconds by
  user id, e.g. modules/ranking_holdout.holdout_cutoffs)."""
  table = tf.constant(cutoffs, tf.int64)

  def keep(example):
    user = tf.reshape(tf.cast(example[user_key], tf.int64), [])
    return tf.reshape(example[seconds_key], []) < tf.gather(table, user)
  return keep


def sample_batch(patterns, feature_spec, size: int = 16):
  """The first `size` examples as one batch (e.g. to create a model's variables), read
  without touching a training dataset's cache or shuffle buffer."""
  return next(iter(dataset(patterns, feature_spec, size, cache=False).take(1)))


def columns(patterns, feature_spec, names) -> Dict[str, np.ndarray]:
  """Dense scalar transformed features of every example, as numpy vectors."""
  return as_numpy(load_columns(patterns, {name: feature_spec[name] for name in names}))


def as_numpy(loaded: Dict[str, tf.Tensor]) -> Dict[str, np.ndarray]:
  """Loaded dense scalar columns (`load_columns`) as numpy vectors."""
  return {name: value.numpy().reshape(-1) for name, value in loaded.items()}


def categorical_sizes(tft_output) -> Dict[str, int]:
  """Number of ids of every categorical transformed feature (vocabulary + OOV buckets)."""
  sizes = {}
  for raw, vocab in F.VOCABULARY_NAMES.items():
    try:
      sizes[_xf(raw)] = tft_output.vocabulary_size_by_name(vocab) + F.OOV_BUCKETS
    except (ValueError, tf.errors.NotFoundError):  # no demographics: no such vocabulary
      continue
  # tft.bucketize yields ids 0..num_buckets-1.
  sizes[_xf(F.USER_AGE_BUCKET)] = F.AGE_BUCKETS + 1
  sizes[_xf(F.TIMESTAMP_BUCKET)] = F.TIMESTAMP_BUCKETS + 1
  return sizes
