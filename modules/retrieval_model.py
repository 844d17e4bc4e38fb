"""Two-tower retrieval model (TensorFlow Recommenders) over Transform's output.

Both towers read transformed features (integer ids from Transform's vocabularies, scaled
numbers), never raw strings: the exported serving models apply the transform graph first
(see modules/retrieval_export.py), so training and serving share one set of ids.

  query tower      user id embedding  ⊕ mean embedding of the user's rated movies
                   (modules/user_history.py) ⊕ the same embeddings pooled by closeness in
                   time to the query, one pool per learned time scale ⊕ demographics
                   (when the data has them) ⊕ time
  candidate tower  movie id embedding ⊕ mean title-token embedding ⊕ mean genre
                   embedding ⊕ release year
  each: concat → optional dense layers → linear to `output_dim` → optional L2 norm

Loss: in-batch softmax (tfrs.tasks.Retrieval) with a temperature, removal of accidental
hits (the positive movie appearing again in the batch) and log-q correction (popular
movies are over-represented as in-batch negatives; their logits get log P(movie)
subtracted, Yi et al. 2019).
"""

import os
from typing import Mapping, Optional, Sequence

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
import tensorflow_recommenders as tfrs  # pylint: disable=g-import-not-at-top

from modules import features as F  # pylint: disable=g-import-not-at-top
from modules import movie_table  # pylint: disable=g-import-not-at-top
from modules import user_history  # pylint: disable=g-import-not-at-top
from modules import warm_start  # pylint: disable=g-import-not-at-top
from modules.hparams import RetrievalHParams, make_optimizer  # pylint: disable=g-import-not-at-top

_xf = F.transformed_name

# Categorical (integer-id) and numeric transformed features of each tower; a tower uses
# those present in the data (ml-latest has no demographics).
QUERY_ID_FEATURE = _xf(F.USER_ID)
QUERY_CATEGORICAL = (_xf(F.USER_GENDER), _xf(F.USER_OCCUPATION), _xf(F.USER_ZIP_PREFIX),
                     _xf(F.USER_AGE_BUCKET), _xf(F.TIMESTAMP_BUCKET))
QUERY_NUMERIC = (_xf(F.USER_AGE), _xf(F.TIMESTAMP))
HISTORY_FEATURE = _xf(F.USER_HISTORY)  # ragged movie ids; built, not from Transform
HISTORY_DAYS_FEATURE = _xf(F.USER_HISTORY_TIMESTAMPS)  # ragged, aligned: when rated (days)
QUERY_DAYS_FEATURE = _xf(F.TIMESTAMP_DAYS)  # when the query happens (days)
HISTORY_EXCLUDE = "_history_exclude"  # training only: the example's own movie id
CANDIDATE_ID_FEATURE = _xf(F.MOVIE_ID)
CANDIDATE_BAGS = (_xf(F.MOVIE_TITLE_TOKENS), _xf(F.MOVIE_GENRES))  # variable-length id lists
CANDIDATE_NUMERIC = (_xf(F.MOVIE_RELEASE_YEAR),)

# Raw features each exported tower takes (the transform graph needs exactly these).
QUERY_RAW_FEATURES = (F.USER_ID, *F.USER_DEMOGRAPHIC_FEATURES, F.TIMESTAMP)
CANDIDATE_RAW_FEATURES = F.MOVIE_FEATURES


def _flat(x):
  return tf.reshape(x, [-1])


class BagEmbedding(tf.keras.layers.Layer):
  """Mean embedding of a variable-length list of ids; an empty list embeds to zeros."""

  def __init__(self, num_ids: int, dim: int, l2: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.num_ids, self.dim, self.l2 = num_ids, dim, l2

  def build(self, input_shape):
    self.embeddings = self.add_weight(
        name="embeddings", shape=(self.num_ids, self.dim),
        initializer=tf.keras.initializers.RandomUniform(-0.05, 0.05),
        regularizer=tf.keras.regularizers.l2(self.l2) if self.l2 else None)
    super().build(input_shape)

  def call(self, ids):
    if not isinstance(ids, tf.SparseTensor):
      ids = tf.sparse.from_dense(ids)  # dense padding would be embedded otherwise
    return tf.nn.safe_embedding_lookup_sparse(self.embeddings, ids, combiner="mean")


class Tower(tf.keras.Model):
  """id embedding ⊕ categorical embeddings ⊕ bag embeddings ⊕ numbers → MLP → vector."""

  def __init__(self, id_feature: str, categorical: Sequence[str], bags: Sequence[str],
               numeric: Sequence[str], sizes: Mapping[str, int], hparams: RetrievalHParams,
               history_feature: Optional[str] = None, use_id: bool = True,
               history_embedding=None,
               **kwargs):
    super().__init__(**kwargs)
    self.id_feature, self.numeric = id_feature, tuple(numeric)
    self.normalize = hparams.normalize
    reg = tf.keras.regularizers.l2(hparams.l2) if hparams.l2 else None
    embedding = lambda feature, d: warm_start.tag(
        tf.keras.layers.Embedding(sizes[feature], d, embeddings_regularizer=reg), feature)
    self.id_embedding = embedding(id_feature, hparams.id_embedding_dim) if use_id else None
    self.embeddings = {name: embedding(name, hparams.feature_embedding_dim)
                       for name in categorical}
    self.bags = {name: warm_start.tag(BagEmbedding(
        sizes[name], hparams.feature_embedding_dim, l2=hparams.l2, name=name), name)
                 for name in bags}
    self.dropout = tf.keras.layers.Dropout(hparams.dropout) if hparams.dropout else None
    layers = [tf.keras.layers.Dense(units, activation="relu", kernel_regularizer=reg)
              for units in hparams.hidden_layers]
    layers.append(tf.keras.layers.Dense(hparams.output_dim, kernel_regularizer=reg))
    self.mlp = tf.keras.Sequential(layers)
    self.history_embedding = None
    self.log_time_scales = None
    if history_feature:  # shared with the candidate tower's movie embedding, or its own
      self.history_embedding = history_embedding or embedding(history_feature,
                                                              hparams.id_embedding_dim)
      if hparams.history_time_scales:
        self.log_time_scales = tf.Variable(
            np.log(np.asarray(hparams.history_time_scales, np.float32)),
            name="history_log_time_scales")

  def _history(self, features):
    """Pooled embeddings of the history ids, leaving out HISTORY_EXCLUDE when given.

    The plain mean, then (with time scales) one pool per scale τ: Σ w·e / (1 + Σ w) with
    w = exp(-|t_query - t_rated| / τ). Movies rated near the query's time count most, and
    the pool fades to zero when none is near (a stale history says nothing about "now";
    a normalised softmax would present the nearest movie at full weight however old).
    Computed on the ragged tensors' flat values with segment sums (one pass for all pools).
    """
    history = features[HISTORY_FEATURE]
    rows = history.value_rowids()
    batch = history.nrows()
    embedded = self.history_embedding(history.flat_values)  # [n, dim]
    weights = tf.ones_like(history.flat_values, dtype=tf.float32)
    if HISTORY_EXCLUDE in features:
      own = tf.gather(tf.reshape(features[HISTORY_EXCLUDE], [-1]), rows)
      weights = tf.cast(tf.not_equal(history.flat_values, own), tf.float32)
    weights = weights[:, None]  # [n, pools]
    offsets = [0.0]  # added to each pool's normaliser: the mean divides by the count alone
    if self.log_time_scales is not None:
      query_days = tf.gather(tf.reshape(features[QUERY_DAYS_FEATURE], [-1]), rows)
      distance = tf.abs(features[HISTORY_DAYS_FEATURE].flat_values - query_days)
      by_time = tf.exp(-distance[:, None] / tf.exp(self.log_time_scales)[None, :])
      weights = tf.concat([weights, weights * by_time], axis=1)
      offsets += [1.0] * self.log_time_scales.shape[0]
    totals = tf.math.unsorted_segment_sum(weights[:, :, None] * embedded[:, None, :], rows,
                                          batch)  # [batch, pools, dim]
    norms = tf.math.unsorted_segment_sum(weights, rows, batch) + tf.constant(offsets)
    pooled = totals / tf.maximum(norms, 1e-9)[:, :, None]
    return tf.reshape(pooled, [batch, weights.shape[1] * embedded.shape[1]])  # static width

  def call(self, features, training=False):
    parts = []
    if self.id_embedding is not None:
      parts.append(self.id_embedding(_flat(features[self.id_feature])))
    if self.history_embedding is not None:
      parts.append(self._history(features))
    parts += [layer(_flat(features[name])) for name, layer in sorted(self.embeddings.items())]
    parts += [layer(features[name]) for name, layer in sorted(self.bags.items())]
    parts += [tf.reshape(tf.cast(features[name], tf.float32), [-1, 1]) for name in self.numeric]
    x = tf.concat(parts, axis=1)
    if self.dropout is not None:
      x = self.dropout(x, training=training)
    out = self.mlp(x)
    return tf.math.l2_normalize(out, axis=1) if self.normalize else out


def query_tower(sizes: Mapping[str, int], hparams: RetrievalHParams,
                available: Sequence[str], movie_embedding=None) -> Tower:
  """The user tower over the transformed features in `available`."""
  return Tower(QUERY_ID_FEATURE, [f for f in QUERY_CATEGORICAL if f in available], (),
               [f for f in QUERY_NUMERIC if f in available], sizes, hparams,
               history_feature=CANDIDATE_ID_FEATURE if hparams.use_history else None,
               use_id=hparams.use_user_id, history_embedding=movie_embedding,
               name="query_tower")


def candidate_tower(sizes: Mapping[str, int], hparams: RetrievalHParams,
                    available: Sequence[str]) -> Tower:
  """The movie tower over the transformed features in `available`."""
  return Tower(CANDIDATE_ID_FEATURE, (), [f for f in CANDIDATE_BAGS if f in available],
               [f for f in CANDIDATE_NUMERIC if f in available], sizes, hparams,
               name="candidate_tower")


class RetrievalModel(tfrs.Model):
  """Both towers and the in-batch softmax retrieval loss."""

  def __init__(self, query: Tower, candidate: Tower, hparams: RetrievalHParams,
               movie_probabilities: Optional[np.ndarray] = None,
               history: Optional[user_history.HistoryTable] = None,
               movies: Optional[movie_table.MovieTable] = None):
    super().__init__()
    self.query_tower, self.candidate_tower = query, candidate
    if hparams.use_history and history is None:
      raise ValueError("use_history needs the users' history table")
    self.history_table = history if hparams.use_history else None  # not `history`: Keras uses it
    if hparams.catalogue_negatives and movies is None:
      raise ValueError("catalogue_negatives needs the movie table")
    self.movie_table = movies if hparams.catalogue_negatives else None
    self.catalogue_negatives = hparams.catalogue_negatives
    self.task = tfrs.tasks.Retrieval(
        temperature=hparams.temperature,
        remove_accidental_hits=hparams.remove_accidental_hits)
    self.remove_accidental_hits = hparams.remove_accidental_hits
    self.movie_probabilities = None
    if hparams.logq_correction:
      if movie_probabilities is None:
        raise ValueError("logq_correction needs the movies' sampling probabilities")
      self.movie_probabilities = tf.constant(movie_probabilities, tf.float32)

  def compute_loss(self, features, training=False):
    movie_ids = _flat(features[CANDIDATE_ID_FEATURE])
    candidates = self.candidate_tower(features, training=training)
    candidate_ids = movie_ids
    probabilities = None
    if self.movie_probabilities is not None:
      probabilities = tf.gather(self.movie_probabilities, movie_ids)
    if self.movie_table is not None:  # mixed negatives: add uniformly drawn movies
      sampled, sampled_ids = self.movie_table.sample(self.catalogue_negatives)
      candidates = tf.concat([candidates, self.candidate_tower(sampled, training=training)], 0)
      candidate_ids = tf.concat([movie_ids, sampled_ids], 0)
      if probabilities is not None:  # a uniform draw's probability is 1/size
        probabilities = tf.concat([probabilities, tf.fill(
            tf.shape(sampled_ids), 1.0 / float(self.movie_table.size))], 0)
    extra = {}
    if probabilities is not None:
      extra["candidate_sampling_probability"] = probabilities
    if self.remove_accidental_hits:
      extra["candidate_ids"] = candidate_ids
    query_features = features
    if self.history_table is not None:
      ids, days = self.history_table.lookup(features[QUERY_ID_FEATURE])
      query_features = {**features, HISTORY_EXCLUDE: movie_ids, HISTORY_FEATURE: ids,
                        HISTORY_DAYS_FEATURE: days}
    return self.task(self.query_tower(query_features, training=training), candidates,
                     compute_metrics=False, compute_batch_metrics=False, **extra)


def movie_probabilities(movie_ids: np.ndarray, num_movies: int) -> np.ndarray:
  """Share of training examples per movie id (smoothed: no movie has probability 0)."""
  counts = np.bincount(movie_ids.reshape(-1), minlength=num_movies).astype(np.float64) + 1.0
  return (counts / counts.sum()).astype(np.float32)


def build(sizes: Mapping[str, int], available: Sequence[str], hparams: RetrievalHParams,
          probabilities: Optional[np.ndarray],
          history: Optional[user_history.HistoryTable] = None,
          movies: Optional[movie_table.MovieTable] = None) -> RetrievalModel:
  tf.keras.utils.set_random_seed(hparams.seed)
  candidates = candidate_tower(sizes, hparams, available)
  tie = hparams.use_history and hparams.tie_history_embedding
  shared = candidates.id_embedding if tie else None
  model = RetrievalModel(query_tower(sizes, hparams, available, shared), candidates, hparams,
                         probabilities, history, movies)
  model.compile(optimizer=make_optimizer(hparams.optimizer, hparams.learning_rate))
  return model
