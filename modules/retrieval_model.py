"""Two-tower retrieval model (TensorFlow Recommenders) over Transform's output.

Both towers read transformed features (integer ids from Transform's vocabularies, scaled
numbers), never raw strings: the exported serving models apply the transform graph first
(see modules/retrieval_export.py), so training and serving share one set of ids.

  query tower      user id embedding  ⊕ mean embedding of the movies the user rated
                   before the query (modules/user_history.py: strictly earlier ratings
                   only) ⊕ the same embeddings pooled by closeness in time to the query,
                   one pool per learned time scale ⊕ a self-attention encoding of the
                   newest `sequence_length` of them as a sequence (SASRec-style: item +
                   position + time-gap embeddings) ⊕ demographics (when the data has
                   them) ⊕ time
  candidate tower  movie id embedding ⊕ mean title-token embedding ⊕ mean genre
                   embedding ⊕ release year
  each: concat → optional dense layers → linear to `output_dim` → optional L2 norm

Loss: in-batch softmax (tfrs.tasks.Retrieval's, written out in `_softmax_loss` to also
exclude a window's own ratings, modules/rating_windows.py) with a temperature, removal of accidental
hits (the positive movie appearing again in the batch) and log-q correction (popular
movies are over-represented as in-batch negatives; their logits get log P(movie)
subtracted, Yi et al. 2019).
"""

from typing import Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from modules import features as F
from modules import movie_table
from modules import rating_windows
from modules import user_history
from modules import warm_start
from modules.hparams import RetrievalHParams, make_optimizer
from modules.keras_steps import StepsWithoutAutoGraph

_xf = F.transformed_name

# Categorical (integer-id) and numeric transformed features of each tower; a tower uses
# those present in the data (ml-latest has no demographics).
QUERY_ID_FEATURE = _xf(F.USER_ID)
QUERY_CATEGORICAL = (_xf(F.USER_GENDER), _xf(F.USER_OCCUPATION), _xf(F.USER_ZIP_PREFIX),
                     _xf(F.USER_AGE_BUCKET), _xf(F.TIMESTAMP_BUCKET))
QUERY_NUMERIC = (_xf(F.USER_AGE), _xf(F.TIMESTAMP))
# Replaced by their unknown (out-of-vocabulary) id in training with probability
# RetrievalHParams.demographic_dropout, so that the model has learnt what "not given"
# means when a request leaves one out (serving/retriever.py sends "" for it).
QUERY_DROPPABLE = (_xf(F.USER_GENDER), _xf(F.USER_OCCUPATION), _xf(F.USER_ZIP_PREFIX))
HISTORY_FEATURE = _xf(F.USER_HISTORY)  # ragged movie ids, newest first; built, not Transform's
HISTORY_SECONDS_FEATURE = _xf(F.USER_HISTORY_TIMESTAMPS)  # ragged, aligned: when rated
QUERY_SECONDS_FEATURE = _xf(F.TIMESTAMP_SECONDS)  # when the query happens (unix seconds)
# The query tower's history pools, when the caller computed them (window batches).
POOLED_HISTORY = "pooled_history"
CANDIDATE_ID_FEATURE = _xf(F.MOVIE_ID)
CANDIDATE_BAGS = (_xf(F.MOVIE_TITLE_TOKENS), _xf(F.MOVIE_GENRES))  # variable-length id lists
CANDIDATE_NUMERIC = (_xf(F.MOVIE_RELEASE_YEAR),)

# Raw features each exported tower takes (the transform graph needs exactly these).
QUERY_RAW_FEATURES = (F.USER_ID, *F.USER_DEMOGRAPHIC_FEATURES, F.TIMESTAMP)
CANDIDATE_RAW_FEATURES = F.MOVIE_FEATURES


_MIN_LOGIT = np.float32(np.finfo(np.float32).min / 100)  # as tfrs' accidental-hit removal


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


def _days_between(later, earlier):
  """(later - earlier) in float32 days, from int64 seconds (exact before the division)."""
  return tf.cast(later - earlier, tf.float32) / F.SECONDS_PER_DAY


class Attention(tf.keras.layers.Layer):
  """Multi-head scaled dot-product attention of `query` positions over `keys` positions.

  Projections are Dense layers (one matmul each); Keras' MultiHeadAttention does the same
  with EinsumDense, which measured ~8x slower on this CPU for [1024, 50, 64] inputs."""

  def __init__(self, dim: int, heads: int, dropout: float, **kwargs):
    super().__init__(**kwargs)
    self.dim, self.heads = dim, heads
    self.q, self.k, self.v = (tf.keras.layers.Dense(dim, use_bias=False, name=n)
                              for n in ("query", "key", "value"))
    self.out = tf.keras.layers.Dense(dim, name="output")
    self.dropout = tf.keras.layers.Dropout(dropout)

  def _heads(self, x):
    shape = tf.shape(x)
    return tf.reshape(x, [shape[0], shape[1], self.heads, self.dim // self.heads])

  def call(self, query, keys, mask, training=False):
    """query [b, q, dim], keys [b, k, dim], mask [b, q, k] (True: may attend)."""
    logits = tf.einsum("bqhd,bkhd->bhqk", self._heads(self.q(query)),
                       self._heads(self.k(keys))) / np.sqrt(self.dim // self.heads)
    logits += (1.0 - tf.cast(mask, tf.float32))[:, None] * -1e9
    weights = self.dropout(tf.nn.softmax(logits, axis=-1), training=training)
    out = tf.einsum("bhqk,bkhd->bqhd", weights, self._heads(self.v(keys)))
    return self.out(tf.reshape(out, tf.shape(query)))


class SequenceEncoder(tf.keras.layers.Layer):
  """The newest `length` history movies read as a sequence (SASRec-style, Kang & McAuley
  2018): movie embedding + position embedding (0 = newest) + an embedding of the gap
  before the query (log2 hours, bucketed), then Transformer blocks (self-attention and a
  feed-forward layer, each residual and layer-normalised) over the non-padded positions.
  Only the newest position's output is used, so the last block computes just that one
  (the same vector for a fraction of the work). Output: zeros when the history is empty.
  Every position is before the query, so reading them all is causal."""

  GAP_BUCKETS = 24  # log2(1 + hours): bucket 23 is ~1 000 years; everything above clips

  def __init__(self, movie_embedding, length: int, dim: int, layers: int, heads: int,
               dropout: float, **kwargs):
    super().__init__(**kwargs)
    if layers < 1 or dim % heads:
      raise ValueError(f"sequence encoder needs layers >= 1 and heads dividing {dim}")
    self.movie_embedding, self.length, self.dim = movie_embedding, length, dim
    self.positions = tf.keras.layers.Embedding(length, dim, name="positions")
    self.gaps = tf.keras.layers.Embedding(self.GAP_BUCKETS, dim, name="time_gaps")
    self.dropout = tf.keras.layers.Dropout(dropout)
    self.blocks = []
    for i in range(layers):
      self.blocks.append((
          Attention(dim, heads, dropout, name=f"attention_{i}"),
          tf.keras.layers.LayerNormalization(name=f"attention_norm_{i}"),
          tf.keras.Sequential([tf.keras.layers.Dense(dim, activation="relu"),
                               tf.keras.layers.Dense(dim)], name=f"feed_forward_{i}"),
          tf.keras.layers.LayerNormalization(name=f"feed_forward_norm_{i}")))

  def call(self, ids: tf.RaggedTensor, seconds: tf.RaggedTensor, query_seconds,
           training=False):
    ids = ids[:, :self.length].to_tensor(default_value=-1, shape=[None, self.length])
    seconds = seconds[:, :self.length].to_tensor(default_value=0, shape=[None, self.length])
    present = ids >= 0  # [batch, length]
    gap_hours = tf.maximum(_days_between(tf.reshape(query_seconds, [-1, 1]), seconds), 0.0) * 24
    gap = tf.minimum(tf.cast(tf.math.log(1.0 + gap_hours) / np.log(2.0), tf.int32),
                     self.GAP_BUCKETS - 1)
    x = (self.movie_embedding(tf.maximum(ids, 0)) + self.positions(tf.range(self.length))[None]
         + self.gaps(gap))
    x = self.dropout(x * tf.cast(present, tf.float32)[:, :, None], training=training)
    for i, (attention, norm, feed_forward, norm2) in enumerate(self.blocks):
      last = i == len(self.blocks) - 1
      query = x[:, :1] if last else x  # the last block: the newest position only
      mask = present[:, None, :] & (present[:, :1, None] if last else present[:, :, None])
      query = norm(query + attention(query, x, mask, training=training))
      x = norm2(query + self.dropout(feed_forward(query), training=training))
    return x[:, 0, :] * tf.cast(present[:, :1], tf.float32)


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
    # Vocabulary features' unknown id is the last one (their single OOV bucket).
    self.droppable = {name: sizes[name] - 1 for name in categorical if name in QUERY_DROPPABLE}
    self.feature_dropout = hparams.demographic_dropout
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
    self.sequence = None
    if history_feature:  # shared with the candidate tower's movie embedding, or its own
      self.history_embedding = history_embedding or embedding(history_feature,
                                                              hparams.id_embedding_dim)
      if hparams.history_time_scales:
        self.log_time_scales = tf.Variable(
            np.log(np.asarray(hparams.history_time_scales, np.float32)),
            name="history_log_time_scales")
      if hparams.sequence_length:
        self.sequence = SequenceEncoder(
            self.history_embedding, hparams.sequence_length, hparams.id_embedding_dim,
            hparams.sequence_layers, hparams.sequence_heads, hparams.dropout,
            name="history_sequence")

  def _history(self, features):
    """Pooled embeddings of the history ids (the user's earlier movies).

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
    weights = tf.ones_like(history.flat_values, dtype=tf.float32)[:, None]  # [n, pools]
    offsets = [0.0]  # added to each pool's normaliser: the mean divides by the count alone
    if self.log_time_scales is not None:
      query_seconds = tf.gather(tf.reshape(features[QUERY_SECONDS_FEATURE], [-1]), rows)
      distance = tf.abs(_days_between(query_seconds,
                                      features[HISTORY_SECONDS_FEATURE].flat_values))
      by_time = tf.exp(-distance[:, None] / tf.exp(self.log_time_scales)[None, :])
      weights = tf.concat([weights, weights * by_time], axis=1)
      offsets += [1.0] * self.log_time_scales.shape[0]
    # Σ w·e per example, pool by pool with sorted segment sums (the ragged rows are in
    # order): materialising w·e as [n, pools, dim] cost pools × the history's traffic.
    pools = weights.shape[1]
    totals = tf.stack([tf.math.segment_sum(weights[:, p:p + 1] * embedded, rows)
                       for p in range(pools)], axis=1)  # [rows seen, pools, dim]
    totals = tf.pad(totals, [[0, batch - tf.shape(totals, out_type=tf.int64)[0]], [0, 0], [0, 0]])
    norms = tf.math.unsorted_segment_sum(weights, rows, batch) + tf.constant(offsets)
    pooled = totals / tf.maximum(norms, 1e-9)[:, :, None]
    return tf.reshape(pooled, [batch, pools * embedded.shape[1]])  # static width

  def pool_windows(self, ids, seconds, query_seconds, mask):
    """`_history` for every position of a batch of windows at once
    (modules/rating_windows.py): the context ids / seconds [windows, context] are
    embedded once and pooled by each position through `mask` [windows, positions,
    context]; returns [windows, positions, pools * dim], the pools in `_history`'s order."""
    embedded = self.history_embedding(ids)  # [k, c, dim]
    weights = [tf.cast(mask, tf.float32)]
    offsets = [0.0]
    if self.log_time_scales is not None:
      distance = tf.abs(_days_between(query_seconds[:, :, None], seconds[:, None, :]))
      scales = tf.exp(self.log_time_scales)
      weights += [weights[0] * tf.exp(-distance / scales[p])
                  for p in range(self.log_time_scales.shape[0])]
      offsets += [1.0] * self.log_time_scales.shape[0]
    pooled = [tf.einsum("kwc,kcd->kwd", w, embedded)
              / tf.maximum(tf.reduce_sum(w, axis=2, keepdims=True) + offset, 1e-9)
              for w, offset in zip(weights, offsets)]
    return tf.concat(pooled, axis=2)

  def _maybe_unknown(self, name, ids, training):
    if not (training and self.feature_dropout and name in self.droppable):
      return ids
    drop = tf.random.uniform(tf.shape(ids)) < self.feature_dropout
    return tf.where(drop, tf.cast(self.droppable[name], ids.dtype), ids)

  # No data-dependent Python control flow here or below, so tf.function need not convert
  # it: autograph's conversion of this code and everything it calls took 20-40 s of a
  # Trainer's first step on ml-100k.
  @tf.autograph.experimental.do_not_convert
  def call(self, features, training=False):
    parts = []
    if self.id_embedding is not None:
      parts.append(self.id_embedding(_flat(features[self.id_feature])))
    if POOLED_HISTORY in features:  # computed for a batch of windows (pool_windows)
      parts.append(features[POOLED_HISTORY])
    elif self.history_embedding is not None:
      parts.append(self._history(features))
    if self.sequence is not None:
      parts.append(self.sequence(features[HISTORY_FEATURE], features[HISTORY_SECONDS_FEATURE],
                                 tf.cast(features[QUERY_SECONDS_FEATURE], tf.int64),
                                 training=training))
    parts += [layer(self._maybe_unknown(name, _flat(features[name]), training))
              for name, layer in sorted(self.embeddings.items())]
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


class RetrievalModel(StepsWithoutAutoGraph, tfrs.Model):
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
    self.history_max = hparams.history_max
    if hparams.catalogue_negatives and movies is None:
      raise ValueError("catalogue_negatives needs the movie table")
    self.movie_table = movies if hparams.catalogue_negatives else None
    self.catalogue_negatives = hparams.catalogue_negatives
    self.temperature = hparams.temperature
    self.remove_accidental_hits = hparams.remove_accidental_hits
    self.movie_probabilities = None
    if hparams.logq_correction:
      if movie_probabilities is None:
        raise ValueError("logq_correction needs the movies' sampling probabilities")
      self.movie_probabilities = tf.constant(movie_probabilities, tf.float32)

  # No autograph (see Tower.call): the loss is plain TensorFlow ops, and converting
  # tfrs' task and Keras' internals cost ~10 s of every Trainer's first step.
  @tf.autograph.experimental.do_not_convert
  def compute_loss(self, features, training=False):
    if rating_windows.MASK in features:
      return self._window_loss(features, training)
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
    queries = self.query_tower(self.with_history(features), training=training)
    return self._softmax_loss(queries, candidates, candidate_ids, probabilities)

  def _window_loss(self, features, training):
    """compute_loss over a batch of windows (modules/rating_windows.py): every position
    is a query, its own movie the positive, the other positions' movies the negatives,
    except those of its own window (the same user's other ratings, which a batch of
    independent examples would rarely hold)."""
    pooled = self.query_tower.pool_windows(
        features[rating_windows.CONTEXT_IDS], features[rating_windows.CONTEXT_SECONDS],
        features[rating_windows.POSITION_SECONDS], features[rating_windows.MASK])
    pooled = tf.boolean_mask(pooled, features[rating_windows.VALID])
    queries = self.query_tower({**features, POOLED_HISTORY: pooled}, training=training)
    candidates = self.candidate_tower(features, training=training)
    movie_ids = _flat(features[CANDIDATE_ID_FEATURE])
    probabilities = (None if self.movie_probabilities is None
                     else tf.gather(self.movie_probabilities, movie_ids))
    return self._softmax_loss(queries, candidates, movie_ids, probabilities,
                              features[rating_windows.WINDOW_OF])

  def _softmax_loss(self, queries, candidates, candidate_ids, probabilities, groups=None):
    """tfrs.tasks.Retrieval's loss (tests/test_rating_windows.py checks it against it):
    summed softmax cross-entropy of query i over all candidates, candidate i its positive,
    with the temperature, log-q correction and accidental hits (the positive movie again
    elsewhere in the batch) removed; with `groups` (one per query, candidates = queries),
    also the candidates of the query's own group."""
    logits = tf.matmul(queries, candidates, transpose_b=True) / self.temperature
    if probabilities is not None:  # tfrs' SamplingProbablityCorrection
      logits -= tf.math.log(tf.clip_by_value(probabilities, 1e-6, 1.0))[None, :]
    n = tf.shape(queries)[0]
    positive = tf.one_hot(tf.range(n), tf.shape(candidates)[0], on_value=True,
                          off_value=False, dtype=tf.bool)
    excluded = tf.zeros_like(positive)
    if self.remove_accidental_hits:
      excluded |= candidate_ids[:n, None] == candidate_ids[None, :]
    if groups is not None:
      excluded |= groups[:, None] == groups[None, :]
    logits = tf.where(excluded & ~positive, _MIN_LOGIT, logits)
    return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.range(n), logits=logits))

  def with_history(self, features):
    """`features` plus each example's causal history (ratings strictly before its time)."""
    return with_history(features, self.history_table, self.history_max)


def with_history(features, table: Optional[user_history.HistoryTable], history_max: int):
  """The query features of a batch of examples with each one's history looked up in
  `table`: the user's ratings strictly before the example's own time, newest first (the
  one place training, the evaluation signature and the recall queries get it)."""
  if table is None:
    return features
  ids, seconds = table.lookup(features[QUERY_ID_FEATURE], features[QUERY_SECONDS_FEATURE],
                              history_max)
  return {**features, HISTORY_FEATURE: ids, HISTORY_SECONDS_FEATURE: seconds}


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
