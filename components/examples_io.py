"""Reading the raw tf.Examples of an Examples artifact split (for evaluation and indexing).

Whole splits are read as numpy columns of the scalar features needed, parsed in batches
straight from the split's files (`split_columns`, `parsed_batches`), never as a list of
serialized Examples; only small splits (the catalogue, one eval rating per user) are
read serialized (`read_serialized`).
"""

import os
from typing import Dict, Iterator, List, Sequence

import numpy as np
import tensorflow as tf
from tfx.types import artifact_utils

from modules import features as F


def split_files(examples, split: str) -> List[str]:
  """The gzipped TFRecord files of one split of an Examples artifact."""
  uri = artifact_utils.get_split_uri([examples], split)
  files = sorted(tf.io.gfile.glob(os.path.join(uri, "*")))
  if not files:
    raise FileNotFoundError(f"split {split!r} of Examples {examples.uri} has no files")
  return files


def split_pattern(examples, split: str) -> str:
  """A file pattern of one split's files (for Beam reads)."""
  split_files(examples, split)  # fails clearly when the split is empty
  return os.path.join(artifact_utils.get_split_uri([examples], split), "*")


def read_serialized(examples, split: str) -> List[bytes]:
  """Every serialized Example of a split: for small splits only (see split_columns)."""
  return [r.numpy() for r in tf.data.TFRecordDataset(split_files(examples, split),
                                                     compression_type="GZIP")]


def parsed_batches(examples, split: str, spec: Dict, batch_size: int = 8192) -> Iterator[Dict]:
  """tf.io.parse_example of `spec` over batches of a split, streamed from its files."""
  records = tf.data.TFRecordDataset(split_files(examples, split), compression_type="GZIP")
  for batch in records.batch(batch_size).prefetch(1):
    yield tf.io.parse_example(batch, spec)


def _scalar_spec(names: Dict[str, tf.dtypes.DType]) -> Dict:
  return {name: tf.io.FixedLenFeature([1], dtype) for name, dtype in names.items()}


def split_columns(examples, split: str, names: Dict[str, tf.dtypes.DType]) -> Dict[str, np.ndarray]:
  """Scalar features of a whole split as numpy columns (strings decoded), read in batches."""
  return _columns(parsed_batches(examples, split, _scalar_spec(names)), names)


def scalar_columns(serialized: Sequence[bytes], names: Dict[str, tf.dtypes.DType],
                   batch_size: int = 8192) -> Dict[str, np.ndarray]:
  """Scalar features of serialized Examples as numpy columns (strings decoded)."""
  spec = _scalar_spec(names)
  return _columns((tf.io.parse_example(tf.constant(serialized[start:start + batch_size]), spec)
                   for start in range(0, len(serialized), batch_size)), names)


def _columns(batches, names) -> Dict[str, np.ndarray]:
  parts = {name: [] for name in names}
  for parsed in batches:
    for name in names:
      parts[name].append(parsed[name].numpy().reshape(-1))
  columns = {}
  for name, dtype in names.items():
    values = np.concatenate(parts[name]) if parts[name] else np.array([])
    if dtype == tf.string:
      values = np.array([v.decode() for v in values], dtype=object)
    columns[name] = values
  return columns


def movie_records(serialized: Sequence[bytes]) -> List[Dict]:
  """Catalogue Examples as dicts: movie_id, title, genres (list), year (int or None)."""
  records = []
  for raw in serialized:
    feature = tf.train.Example.FromString(raw).features.feature
    year = feature[F.MOVIE_RELEASE_YEAR].int64_list.value if F.MOVIE_RELEASE_YEAR in feature else []
    records.append({
        "movie_id": feature[F.MOVIE_ID].bytes_list.value[0].decode(),
        "title": feature[F.MOVIE_TITLE].bytes_list.value[0].decode(),
        "genres": [g.decode() for g in feature[F.MOVIE_GENRES].bytes_list.value],
        "year": int(year[0]) if year else None,
    })
  return records
