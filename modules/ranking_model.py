"""Ranking model: predicts a user's rating of a movie from transformed features.

  rating = global mean + user bias + movie bias + f(x)
  x = user id ⊕ movie id ⊕ demographics ⊕ genres (multi-hot) ⊕ year ⊕ time embeddings
  f = DCN-v2: cross layers (explicit feature crosses, tfrs.layers.dcn.Cross) → deep MLP → 1

The model proper (`RankingCore`) takes only dense tensors (`core_inputs` converts
Transform's output, including the sparse genre ids, into them), so it converts to
TensorFlow Lite as it is.
"""

import os
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from modules import features as F
from modules.keras_steps import StepsWithoutAutoGraph
from modules import warm_start
from modules.hparams import RankingHParams, make_optimizer

_xf = F.transformed_name
USER_ID, MOVIE_ID = _xf(F.USER_ID), _xf(F.MOVIE_ID)
CATEGORICAL = (_xf(F.USER_GENDER), _xf(F.USER_OCCUPATION), _xf(F.USER_ZIP_PREFIX),
               _xf(F.USER_AGE_BUCKET), _xf(F.TIMESTAMP_BUCKET))
NUMERIC = (_xf(F.USER_AGE), _xf(F.TIMESTAMP), _xf(F.MOVIE_RELEASE_YEAR))
EMBEDDED = (USER_ID, MOVIE_ID) + CATEGORICAL  # the inputs looked up in embedding tables
GENRES = _xf(F.MOVIE_GENRES)
GENRES_MULTI_HOT = "movie_genres_multi_hot"
# Where the trainer exports RankingCore alone under the serving model (for TensorFlow
# Lite), and the file there that lists its inputs.
CORE_DIR = os.path.join("assets.extra", "ranking_core")
CORE_INFO_FILE = "ranking_core.json"
# The RankingCore inputs made from the movie's features alone; the others are made from
# the user's and the query time. Serving computes each side once per movie and per known
# user (serving/lite_ratings.py): an input made from both would belong to neither.
MOVIE_CORE_INPUTS = (MOVIE_ID, _xf(F.MOVIE_RELEASE_YEAR), GENRES_MULTI_HOT)
# Raw features the exported ranking signatures take (the label is not one of them).
RAW_FEATURES = (F.USER_ID, *F.USER_DEMOGRAPHIC_FEATURES, F.TIMESTAMP, *F.MOVIE_FEATURES)


def core_input_names(available: Sequence[str]) -> list:
  """The dense inputs of RankingCore, given the transformed features the data has."""
  names = [USER_ID, MOVIE_ID] + [f for f in CATEGORICAL + NUMERIC if f in available]
  return names + [GENRES_MULTI_HOT]


def transformed_inputs(names: Sequence[str]) -> list:
  """The transformed features `core_inputs` reads for these RankingCore inputs."""
  return [GENRES if name == GENRES_MULTI_HOT else name for name in names]


def core_inputs(transformed: Mapping[str, tf.Tensor], names: Sequence[str],
                num_genres: int) -> Dict[str, tf.Tensor]:
  """Transform's output → RankingCore inputs: [batch] ids / floats, genres multi-hot."""
  out = {}
  for name in names:
    if name == GENRES_MULTI_HOT:
      genres = transformed[GENRES]
      if isinstance(genres, tf.SparseTensor):
        ids = tf.SparseTensor(genres.indices, tf.minimum(genres.values, num_genres - 1),
                              genres.dense_shape)
        out[name] = tf.cast(tf.sparse.to_indicator(ids, num_genres), tf.float32)
      else:  # dense [batch, n] ids, no padding
        out[name] = tf.reduce_max(tf.one_hot(genres, num_genres), axis=1)
    else:
      value = tf.reshape(transformed[name], [-1])
      out[name] = value if value.dtype == tf.float32 else tf.cast(value, tf.int64)
  return out


class RankingCore(tf.keras.Model):
  """Dense inputs → predicted rating [batch, 1]."""

  def __init__(self, sizes: Mapping[str, int], names: Sequence[str], hparams: RankingHParams,
               global_mean: float, row_counts: Optional[Mapping[str, np.ndarray]] = None,
               **kwargs):
    super().__init__(**kwargs)
    self.names = list(names)
    reg = tf.keras.regularizers.l2(hparams.l2) if hparams.l2 else None
    self.embeddings = {}
    for name in self.names:
      if name in (USER_ID, MOVIE_ID):
        dim = hparams.id_embedding_dim
      elif name in CATEGORICAL:
        dim = hparams.feature_embedding_dim
      else:
        continue
      self.embeddings[name] = warm_start.tag(tf.keras.layers.Embedding(sizes[name], dim), name)
    self.user_bias = warm_start.tag(tf.keras.layers.Embedding(
        sizes[USER_ID], 1, embeddings_initializer="zeros"), USER_ID)
    self.movie_bias = warm_start.tag(tf.keras.layers.Embedding(
        sizes[MOVIE_ID], 1, embeddings_initializer="zeros"), MOVIE_ID)
    self.embedding_l2, self.row_weights = hparams.embedding_l2, None
    if hparams.embedding_l2:
      if row_counts is None:
        raise ValueError("embedding_l2 > 0 needs row_counts (training examples per "
                         "embedding row, see `row_counts`)")
      self.row_weights = {name: _inverse_frequencies(row_counts[name])
                          for name in self.embeddings}
    self.crosses = [tfrs.layers.dcn.Cross(projection_dim=hparams.cross_projection_dim or None,
                                          kernel_regularizer=reg)
                    for _ in range(hparams.cross_layers)]
    self.deep = [tf.keras.layers.Dense(u, activation="relu", kernel_regularizer=reg)
                 for u in hparams.deep_layers]
    self.dropout = tf.keras.layers.Dropout(hparams.dropout) if hparams.dropout else None
    self.out = tf.keras.layers.Dense(1, kernel_regularizer=reg)
    self.global_mean = tf.constant(global_mean, tf.float32)

  @tf.autograph.experimental.do_not_convert  # as retrieval_model.Tower.call
  def call(self, inputs, training=False):
    parts, rows = [], {}
    for name in self.names:
      if name in self.embeddings:
        rows[name] = self.embeddings[name](inputs[name])
        parts.append(rows[name])
      elif name == GENRES_MULTI_HOT:
        parts.append(inputs[name])
      else:
        parts.append(tf.reshape(inputs[name], [-1, 1]))
    x0 = tf.concat(parts, axis=1)
    x = x0
    for cross in self.crosses:
      x = cross(x0, x)
    for layer in self.deep:
      x = layer(x)
      if self.dropout is not None:
        x = self.dropout(x, training=training)
    user_bias, movie_bias = self.user_bias(inputs[USER_ID]), self.movie_bias(inputs[MOVIE_ID])
    if training and self.row_weights is not None:
      self.add_loss(self.embedding_l2 * self._row_penalty(
          inputs, rows, {USER_ID: user_bias, MOVIE_ID: movie_bias}))
    return self.global_mean + user_bias + movie_bias + self.out(x)

  def _row_penalty(self, inputs, rows, biases):
    """Mean over the batch of Σ n / count(row) · ‖row‖² over each example's looked-up
    embedding and bias rows: in expectation over batches, Σ ‖row‖² over every row of
    every table that training sees, i.e. Keras' whole-table L2 penalty. Its gradient,
    though, touches only the batch's rows, so a step costs the same with 286,000 users
    as with 943 and lazy_adam can skip the rest (BENCHMARKS.md, "Scale")."""
    total = 0.0
    for name, weights in self.row_weights.items():
      squares = tf.reduce_sum(tf.square(rows[name]), axis=1)
      if name in biases:
        squares += tf.reduce_sum(tf.square(biases[name]), axis=1)
      total += tf.gather(weights, inputs[name]) * squares
    return tf.reduce_mean(total)


def _inverse_frequencies(counts: np.ndarray) -> tf.Tensor:
  """n / count per row (rows never trained on: never looked up in training, weight 0)."""
  counts = np.asarray(counts, np.float64)
  weights = np.divide(counts.sum(), counts, out=np.zeros_like(counts), where=counts > 0)
  return tf.constant(weights, tf.float32)


def row_counts(columns: Mapping[str, np.ndarray], sizes: Mapping[str, int],
               names: Sequence[str]) -> Dict[str, np.ndarray]:
  """Training examples per row of each embedded input among `names` (their id columns,
  e.g. from transformed_data.columns)."""
  return {name: np.bincount(np.asarray(columns[name], np.int64), minlength=sizes[name])
          for name in names if name in EMBEDDED}


class RankingEnsemble(tf.keras.Model):
  """Mean prediction of several RankingCores, each trained on its own (different seeds)."""

  def __init__(self, members, **kwargs):
    super().__init__(**kwargs)
    self.members = list(members)
    self.names = self.members[0].names

  @tf.autograph.experimental.do_not_convert  # as retrieval_model.Tower.call
  def call(self, inputs, training=False):
    return tf.add_n([m(inputs, training=training) for m in self.members]) / len(self.members)


class RankingModel(StepsWithoutAutoGraph, tf.keras.Model):
  """Transform's output → rating: `core_inputs` then RankingCore (trained end to end)."""

  def __init__(self, core: RankingCore, num_genres: int, **kwargs):
    super().__init__(**kwargs)
    self.core, self.num_genres = core, num_genres

  @tf.autograph.experimental.do_not_convert  # as retrieval_model.Tower.call
  def call(self, transformed, training=False):
    return self.core(core_inputs(transformed, self.core.names, self.num_genres),
                     training=training)


def build(sizes: Mapping[str, int], available: Sequence[str], hparams: RankingHParams,
          global_mean: float, row_counts: Optional[Mapping[str, np.ndarray]] = None
          ) -> RankingModel:
  """row_counts (training examples per embedding row, `row_counts`): needed when
  hparams.embedding_l2 > 0."""
  tf.keras.utils.set_random_seed(hparams.seed)
  core = RankingCore(sizes, core_input_names(available), hparams, global_mean, row_counts,
                     name="core")
  return compile_model(RankingModel(core, sizes[GENRES]), hparams)


def ensemble(models: Sequence["RankingModel"], hparams: RankingHParams) -> "RankingModel":
  """One RankingModel averaging the cores of independently trained ones."""
  if len(models) == 1:
    return models[0]
  return compile_model(RankingModel(RankingEnsemble([m.core for m in models], name="core"),
                                    models[0].num_genres), hparams)


class JointMembers(StepsWithoutAutoGraph, tf.keras.Model):
  """Training-time wrapper: every member's prediction side by side ([n, members]), so
  that one pass over the data trains all of them. The loss is the sum of the members'
  MSEs, so each member gets exactly the gradient it would get trained alone (and its own
  L2 penalty once); they differ only by their seeds, as before."""

  def __init__(self, members: Sequence["RankingModel"], **kwargs):
    super().__init__(**kwargs)
    self.members = list(members)

  @tf.autograph.experimental.do_not_convert  # as retrieval_model.Tower.call
  def call(self, transformed, training=False):
    return tf.concat([m(transformed, training=training) for m in self.members], axis=1)


def _summed_squared_errors(labels, predictions):
  """Per example, Σ over members of the squared error (Keras averages it over a batch)."""
  return tf.reduce_sum(tf.square(predictions - tf.reshape(labels, [-1, 1])), axis=1)


class _MemberRMSE(tf.keras.metrics.RootMeanSquaredError):
  """RMSE of one member's column, or (member None) of the members' mean: the ensemble."""

  def __init__(self, member=None, **kwargs):
    super().__init__(name="rmse" if member is None else f"rmse_{member}", **kwargs)
    self.member = member

  def update_state(self, y_true, y_pred, sample_weight=None):
    column = (tf.reduce_mean(y_pred, axis=1, keepdims=True) if self.member is None
              else y_pred[:, self.member:self.member + 1])
    return super().update_state(y_true, column, sample_weight)


def jointly(members: Sequence["RankingModel"], hparams: RankingHParams) -> JointMembers:
  """The members as one compiled model to fit; metrics: the ensemble's RMSE and each
  member's (rmse_0, rmse_1, ...)."""
  joint = JointMembers(members)
  joint.compile(optimizer=make_optimizer(hparams.optimizer, hparams.learning_rate),
                loss=_summed_squared_errors,
                metrics=[_MemberRMSE()] + [_MemberRMSE(i) for i in range(len(members))])
  return joint


def compile_model(model: "RankingModel", hparams: RankingHParams) -> "RankingModel":
  model.compile(optimizer=make_optimizer(hparams.optimizer, hparams.learning_rate),
                loss=tf.keras.losses.MeanSquaredError(),
                metrics=[tf.keras.metrics.RootMeanSquaredError(name="rmse")])
  return model
