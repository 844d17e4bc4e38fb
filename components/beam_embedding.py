"""Model inference over Examples files as a Beam pipeline: the embedding step of the
RetrievalEvaluator and the IndexBuilder.

Embedding every eval row and every movie is the part of evaluation and indexing that grows
with the data, so it runs on the component's Beam runner: the multi-process DirectRunner
locally (`--beam-mode multi_processing`), Dataflow / Flink / Spark on a cluster (the
pipeline's `beam_pipeline_args`). Each worker loads the exported tower once (`setup`),
embeds batches of serialized tf.Examples, and the results are written as TFRecords keyed
by the SHA-1 of the serialized example; the executor reads them back and looks each of
its examples up (`EmbeddedExamples`, a drop-in for RetrievalModelPair's
`embed_*_examples`). Scoring and the ScaNN build then run on the one machine, as they
need every candidate in memory anyway.
"""

import hashlib
import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import tensorflow as tf

from modules import retrieval_export

_KEY, _EMBEDDING, _ID = "key", "embedding", "id"


def example_key(serialized: bytes) -> bytes:
  return hashlib.sha1(serialized).digest()


class _EmbedBatch(beam.DoFn):
  """Serialized Examples (a batch) → (key, embedding, id) with one exported tower."""

  def __init__(self, model_dir: str, id_output: Optional[str]):
    super().__init__()
    self._model_dir, self._id_output = model_dir, id_output
    self._model = self._fn = None

  def setup(self):  # once per worker (a worker process imports this module: legacy Keras)
    self._model = tf.saved_model.load(self._model_dir)  # keeps the variables alive
    self._fn = self._model.signatures[retrieval_export.EXAMPLES_SIGNATURE]

  def process(self, batch: List[bytes]):
    out = self._fn(examples=tf.constant(batch))
    embeddings = out[retrieval_export.EMBEDDING].numpy()
    ids = out[self._id_output].numpy() if self._id_output else [b""] * len(batch)
    for serialized, embedding, id_ in zip(batch, embeddings, ids):
      yield _record(example_key(serialized), embedding, id_)


def _record(key: bytes, embedding: np.ndarray, id_: bytes) -> bytes:
  return tf.train.Example(features=tf.train.Features(feature={
      _KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[key])),
      _ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[id_])),
      _EMBEDDING: tf.train.Feature(float_list=tf.train.FloatList(value=embedding)),
  })).SerializeToString()


def add_embedding(pipeline: beam.Pipeline, name: str, file_patterns: Sequence[str],
                  model_dir: str, output_prefix: str, id_output: Optional[str] = None):
  """Adds to `pipeline`: read the gzipped Examples, embed with the SavedModel at
  `model_dir` (its serve_tf_examples signature), write TFRecords under output_prefix."""
  reads = [pipeline | f"Read{name}{i}" >> beam.io.ReadFromTFRecord(
      pattern, compression_type=beam.io.filesystem.CompressionTypes.GZIP)
           for i, pattern in enumerate(file_patterns)]
  return (reads | f"Flatten{name}" >> beam.Flatten()
          | f"Batch{name}" >> beam.BatchElements(min_batch_size=256, max_batch_size=4096)
          | f"Embed{name}" >> beam.ParDo(_EmbedBatch(model_dir, id_output))
          | f"Write{name}" >> beam.io.WriteToTFRecord(output_prefix))


def read_embeddings(output_prefix: str) -> Dict[bytes, Tuple[np.ndarray, bytes]]:
  """key → (embedding, id) of what add_embedding wrote."""
  spec = {_KEY: tf.io.FixedLenFeature([], tf.string), _ID: tf.io.FixedLenFeature([], tf.string),
          _EMBEDDING: tf.io.VarLenFeature(tf.float32)}
  table = {}
  files = tf.io.gfile.glob(output_prefix + "*")
  for batch in tf.data.TFRecordDataset(files).batch(8192):
    parsed = tf.io.parse_example(batch, spec)
    embeddings = tf.sparse.to_dense(parsed[_EMBEDDING]).numpy()
    for key, id_, embedding in zip(parsed[_KEY].numpy(), parsed[_ID].numpy(), embeddings):
      table[key] = (embedding, id_)
  return table


class EmbeddedExamples:
  """Looks up embeddings made by add_embedding: the `embed_query_examples` /
  `embed_candidate_examples` of RetrievalModelPair, without running a model."""

  def __init__(self, queries: Mapping[bytes, Tuple], candidates: Mapping[bytes, Tuple]):
    self._queries, self._candidates = queries, candidates

  @staticmethod
  def _lookup(table, serialized: Iterable[bytes], what: str):
    try:
      return [table[example_key(s)] for s in serialized]
    except KeyError as e:
      raise KeyError(f"an example has no {what} embedding from the Beam step: it read "
                     "other files than the executor") from e

  def embed_query_examples(self, serialized: Sequence[bytes]) -> np.ndarray:
    rows = self._lookup(self._queries, serialized, "query")
    return np.stack([e for e, _ in rows]).astype(np.float32) if rows else np.zeros((0, 0))

  def embed_candidate_examples(self, serialized: Sequence[bytes]):
    rows = self._lookup(self._candidates, serialized, "candidate")
    return (np.stack([e for e, _ in rows]).astype(np.float32),
            np.array([i.decode() for _, i in rows], dtype=object))


def embed_with_beam(make_pipeline, tmp_dir: str, model_dirs: Mapping[str, str],
                    candidate_pattern: str, query_pattern: Optional[str] = None
                    ) -> Dict[str, EmbeddedExamples]:
  """Embeds the candidates (and the query examples, when given) with each model's
  exported towers (model_dirs: name → Trainer serving dir) in one Beam pipeline."""
  prefixes = {}
  with make_pipeline() as pipeline:
    for name, model_dir in model_dirs.items():
      prefixes[name] = {
          "candidates": os.path.join(tmp_dir, name, "candidates", "part"),
          "queries": os.path.join(tmp_dir, name, "queries", "part")}
      add_embedding(pipeline, f"{name}Candidates", [candidate_pattern],
                    os.path.join(model_dir, retrieval_export.CANDIDATE_DIR),
                    prefixes[name]["candidates"], id_output=retrieval_export.MOVIE_ID_OUTPUT)
      if query_pattern:
        add_embedding(pipeline, f"{name}Queries", [query_pattern],
                      os.path.join(model_dir, retrieval_export.QUERY_DIR),
                      prefixes[name]["queries"])
  return {name: EmbeddedExamples(
      read_embeddings(p["queries"]) if query_pattern else {}, read_embeddings(p["candidates"]))
          for name, p in prefixes.items()}
