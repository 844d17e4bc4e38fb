"""Exported retrieval models: towers behind signatures that take raw features.

The Trainer's Model artifact holds two SavedModels under its serving directory:

  query/      serving_default(user_id, [user_age, user_gender, user_occupation,
                              user_zip_code,] timestamp, user_history,
                              user_history_timestamps)  -> {"embedding"}
                              (1-D inputs; user_history [batch, n] movie ids, "" padded;
                              user_history_timestamps [batch, n] unix seconds, aligned)
              serve_tf_examples(examples: serialized tf.Example) -> {"embedding"}
  candidate/  serve_tf_examples(examples: serialized tf.Example of a movie)
                                                         -> {"embedding", "movie_id"}

The transform graph is applied inside each signature (only the raw features a tower needs
are required: tf.Transform prunes the rest), so callers never see vocabulary ids.
"""

import functools
import json
import os
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from modules import features as F
from modules import saved_weights
from modules.retrieval_model import HISTORY_FEATURE, HISTORY_SECONDS_FEATURE, with_history

QUERY_DIR = "query"
CANDIDATE_DIR = "candidate"
INFO_FILE = "retrieval_model.json"  # which raw features the query signature takes, dims
EXAMPLES_SIGNATURE = "serve_tf_examples"
EMBEDDING = "embedding"
MOVIE_ID_OUTPUT = F.MOVIE_ID  # the candidate signature's second output


class _TowerModule(saved_weights.KerasWeights):
  """A tower's weights (not the Keras tower: saved_weights), the transform layer (with its
  vocabulary assets) and the history tables, so all are saved."""

  def __init__(self, tower, tft_layer, history=None, movie_ids=None):
    super().__init__(tower)
    self.tft_layer = tft_layer
    self.history, self.movie_ids = history, movie_ids


def _raw_spec(tft_output, names: Sequence[str]):
  raw = tft_output.raw_feature_spec()
  return {name: raw[name] for name in names if name in raw}


def _movie_id_table(tft_output) -> tf.lookup.StaticHashTable:
  """Raw movie id -> Transform's id (-1 when unknown), from Transform's vocabulary file."""
  path = tft_output.vocabulary_file_by_name(F.VOCABULARY_NAMES[F.MOVIE_ID])
  return tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
      path, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
      tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER), default_value=-1)


def export_query_model(tower, tft_output, raw_features: Sequence[str], path: str,
                       history=None, history_max: int = 0) -> List[str]:
  """Saves the query tower; returns the raw features its default signature takes.

  With a history table (modules/user_history.py), `serve_tf_examples` looks each user's
  training ratings made strictly before the example's timestamp up in it (the evaluation
  view: what a live system knew then), and `serving_default` takes
  `user_history`: [batch, n] raw movie ids, padded with "", and `user_history_timestamps`
  when each was rated (the serving view; pass the query's timestamp when unknown).
  """
  spec = _raw_spec(tft_output, raw_features)
  module = _TowerModule(tower, tft_output.transform_features_layer(), history,
                        _movie_id_table(tft_output) if history is not None else None)

  def embed(transformed):
    return {EMBEDDING: module.model(transformed)}

  @tf.function
  def serve_features(**features):
    history_ids = features.pop(F.USER_HISTORY, None)
    history_times = features.pop(F.USER_HISTORY_TIMESTAMPS, None)
    transformed = module.tft_layer(
        {name: tf.reshape(value, [-1, 1]) for name, value in features.items()})
    if history_ids is not None:
      ids = module.movie_ids.lookup(history_ids)
      known = ids >= 0  # drops "" padding and movies the model has never seen
      transformed[HISTORY_FEATURE] = tf.ragged.boolean_mask(ids, known)
      transformed[HISTORY_SECONDS_FEATURE] = tf.ragged.boolean_mask(history_times, known)
    return embed(transformed)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def serve_examples(examples):
    transformed = module.tft_layer(tf.io.parse_example(examples, spec))
    return embed(with_history(transformed, module.history, history_max))

  inputs = {name: tf.TensorSpec([None], s.dtype, name=name) for name, s in spec.items()}
  if history is not None:
    inputs[F.USER_HISTORY] = tf.TensorSpec([None, None], tf.string, name=F.USER_HISTORY)
    inputs[F.USER_HISTORY_TIMESTAMPS] = tf.TensorSpec(
        [None, None], tf.int64, name=F.USER_HISTORY_TIMESTAMPS)
  default = serve_features.get_concrete_function(**inputs)
  tf.saved_model.save(module, path, signatures={
      "serving_default": default, EXAMPLES_SIGNATURE: serve_examples})
  with tf.io.gfile.GFile(os.path.join(path, INFO_FILE), "w") as f:
    # history_max: how many most recent rated movies the tower was trained with.
    json.dump({"raw_features": sorted(inputs), "history_max": history_max or None}, f)
  return sorted(inputs)


def export_candidate_model(tower, tft_output, path: str) -> None:
  spec = _raw_spec(tft_output, F.MOVIE_FEATURES)
  module = _TowerModule(tower, tft_output.transform_features_layer())

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def serve_examples(examples):
    raw = tf.io.parse_example(examples, spec)
    return {EMBEDDING: module.model(module.tft_layer(raw)),
            MOVIE_ID_OUTPUT: tf.reshape(raw[F.MOVIE_ID], [-1])}

  tf.saved_model.save(module, path, signatures={
      "serving_default": serve_examples, EXAMPLES_SIGNATURE: serve_examples})


class RetrievalModelPair:
  """The exported query and candidate models of one Trainer run, loaded for scoring.

  Each tower loads when first used: the IndexBuilder, whose catalogue the Beam step
  embeds, only ever needs the query tower here.
  """

  def __init__(self, serving_dir: str):
    self.dir = serving_dir
    with open(os.path.join(serving_dir, QUERY_DIR, INFO_FILE)) as f:
      self.query_features = json.load(f)["raw_features"]

  @functools.cached_property
  def query(self):
    return tf.saved_model.load(os.path.join(self.dir, QUERY_DIR))

  @functools.cached_property
  def candidate(self):
    return tf.saved_model.load(os.path.join(self.dir, CANDIDATE_DIR))

  def embed_query_examples(self, serialized: Sequence[bytes], batch_size: int = 4096) -> np.ndarray:
    fn = self.query.signatures[EXAMPLES_SIGNATURE]
    return _batched(lambda b: fn(examples=b)[EMBEDDING], serialized, batch_size)

  def embed_candidate_examples(self, serialized: Sequence[bytes], batch_size: int = 4096):
    """(embeddings [n, d], movie ids [n]) of serialized movie Examples."""
    fn = self.candidate.signatures[EXAMPLES_SIGNATURE]
    embeddings, ids = [], []
    for start in range(0, len(serialized), batch_size):
      out = fn(examples=tf.constant(serialized[start:start + batch_size]))
      embeddings.append(out[EMBEDDING].numpy())
      ids.extend(v.decode() for v in out[MOVIE_ID_OUTPUT].numpy())
    return np.concatenate(embeddings).astype(np.float32), np.array(ids, dtype=object)

  def embed_queries(self, features: Dict[str, Sequence]) -> np.ndarray:
    """Query embeddings from raw feature columns (1-D sequences of equal length)."""
    fn = self.query.signatures["serving_default"]
    return fn(**{k: tf.constant(v) for k, v in features.items()})[EMBEDDING].numpy()


def _batched(fn, serialized, batch_size) -> np.ndarray:
  parts = [fn(tf.constant(serialized[s:s + batch_size])).numpy()
           for s in range(0, len(serialized), batch_size)]
  return np.concatenate(parts).astype(np.float32)
