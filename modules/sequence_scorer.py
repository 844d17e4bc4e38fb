"""The second stage: a sequence scorer that orders retrieval's candidates (issue 12).

A SASRec-style encoder (Kang & McAuley 2018) reads the user's newest `sequence_length`
earlier movies, newest first (movie, position-from-newest and log-days-gap embeddings,
pre-norm self-attention blocks), and scores every movie against the newest position's
output: logits over the whole catalogue, trained with a full softmax as in Klenitskiy &
Vasilev 2023 (modules/sequence_trainer.py). It never sees a candidate list, so it cannot
learn the lists' popularity pattern that sank the list-fitted re-rankers (BENCHMARKS.md,
"Ranking").

At serving, each candidate's ranking score is the scorer's score and the retrieval score,
each standardised within the candidate list, added with equal weights (`blend`): the two
models make different errors, and nothing is fitted on the lists. Measured on ml-100k
(BENCHMARKS.md, "A sequence scorer from the next-item literature"). Other weights,
chosen on the rows they score: split last is best at 0.5-0.75 (the towers know every eval
user), the time cut at 1.5-3 (most eval users new since training); equal weights sit
between, 1-3 points below either best (BENCHMARKS.md, "Any blend weight").

Exported beside the rating model, under the ranking model's serving directory:

  assets.extra/sequence_scorer/  score(user_history [n, h] raw movie ids, newest first,
                                       "" padded; user_history_timestamps [n, h] unix
                                       seconds; timestamp [n]; candidates [n, c] raw ids)
                                   -> {"scores" [n, c], "known" [n, c]: False for a
                                       candidate the scorer never trained on}
    core/                        serving_default(history [n, L] vocabulary ids newest
                                       first, padded with the vocabulary size; gaps [n, L]
                                       log(1 + days); candidates [n, c] vocabulary ids)
                                   -> {"scores"}: for TensorFlow Lite
"""

import json
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from modules import features as F
from modules import saved_weights
from modules import tflite_runner
from modules.hparams import RankingHParams

EXPORT_DIR = os.path.join("assets.extra", "sequence_scorer")
# Under EXPORT_DIR: the scorer on vocabulary ids and gaps alone (dense inputs named
# CORE_INPUTS), which the BundlePusher converts to TensorFlow Lite.
CORE_DIR = "core"
CORE_INPUTS = ("history", "gaps", "candidates")
INFO_FILE = "sequence_scorer.json"  # the training summary, and MODEL_INFO
MODEL_INFO = "model"
SIGNATURE = "score"
CANDIDATES = "candidates"
SCORES, KNOWN = "scores", "known"


def log_day_gaps(query_seconds, rated_seconds):
  """log(1 + days) from each rating to the query (0 for a rating at or after it)."""
  return np.log1p(np.maximum(query_seconds - rated_seconds, 0) / F.SECONDS_PER_DAY)


class _Block(tf.keras.layers.Layer):
  """Pre-norm self-attention and feed-forward; padded positions are masked out."""

  def __init__(self, hparams: RankingHParams, **kwargs):
    super().__init__(**kwargs)
    dim, heads, rate = hparams.sequence_dim, hparams.sequence_heads, hparams.sequence_dropout
    self.attention_norm = tf.keras.layers.LayerNormalization()
    self.attention = tf.keras.layers.MultiHeadAttention(heads, dim // heads, dropout=rate)
    self.feed_forward_norm = tf.keras.layers.LayerNormalization()
    self.hidden = tf.keras.layers.Dense(dim, activation="relu")
    self.out = tf.keras.layers.Dense(dim)
    self.dropout = tf.keras.layers.Dropout(rate)

  def call(self, x, valid, training=False, newest_only=False):
    """x [b, L, dim] -> the same, or [b, 1, dim]: the newest position only, all the last
    block needs to compute (about a third of the training time)."""
    y = self.attention_norm(x)
    queries = y[:, :1] if newest_only else y
    width = tf.shape(queries)[1]
    mask = tf.cast(valid[:, None, :] * tf.ones_like(valid[:, :width])[..., None], tf.bool)
    x = x[:, :width] + self.dropout(
        self.attention(queries, y, attention_mask=mask, training=training), training=training)
    x = x + self.dropout(self.out(self.hidden(self.feed_forward_norm(x))), training=training)
    return x * valid[:, :width, None]


class SequenceScorer(tf.keras.Model):
  """(history [b, L] movie ids newest first, padded with num_movies; gaps [b, L]
  log-days) -> logits [b, num_movies] over the catalogue."""

  def __init__(self, num_movies: int, hparams: RankingHParams, **kwargs):
    super().__init__(**kwargs)
    self.num_movies, self.length = num_movies, hparams.sequence_length
    dim = hparams.sequence_dim
    self.movie = tf.keras.layers.Embedding(num_movies + 1, dim)  # + the padding id
    self.position = tf.keras.layers.Embedding(self.length, dim)
    self.gap = tf.keras.layers.Dense(dim)
    self.dropout = tf.keras.layers.Dropout(hparams.sequence_dropout)
    self.blocks = [_Block(hparams) for _ in range(hparams.sequence_blocks)]
    self.norm = tf.keras.layers.LayerNormalization()
    self.movie_bias = self.add_weight(name="movie_bias", shape=[num_movies],
                                      initializer="zeros")
    self.scale = float(np.sqrt(dim))

  def encode(self, history, gaps, training=False):
    """The query: [b, dim], read at the newest position."""
    valid = tf.cast(history < self.num_movies, tf.float32)
    x = (self.movie(history) * self.scale + self.position(tf.range(self.length))[None]
         + self.gap(gaps[..., None]))
    x = self.dropout(x, training=training) * valid[..., None]
    for i, block in enumerate(self.blocks):
      x = block(x, valid, training=training, newest_only=i == len(self.blocks) - 1)
    return self.norm(x[:, 0])

  def call(self, inputs, training=False):
    history, gaps = inputs
    query = self.encode(history, gaps, training=training)
    return (tf.matmul(query, self.movie.embeddings[:self.num_movies], transpose_b=True)
            + self.movie_bias)

  def candidate_scores(self, query, candidates):
    """Scores [b, c] of candidate ids [b, c] (each < num_movies) for queries [b, dim]."""
    return (tf.einsum("bd,bcd->bc", query, tf.gather(self.movie.embeddings, candidates))
            + tf.gather(self.movie_bias, candidates))


def standardised(scores: np.ndarray, known: Optional[np.ndarray] = None) -> np.ndarray:
  """Scores [lists, N] standardised within each list (over its `known` entries: the
  others get 0, the list's mean), so that two scorers' scores add with equal weights."""
  scores = np.asarray(scores, np.float64)
  known = np.ones(scores.shape, bool) if known is None else np.asarray(known, bool)
  count = np.maximum(known.sum(1, keepdims=True), 1)
  mean = np.where(known, scores, 0).sum(1, keepdims=True) / count
  deviation = np.where(known, scores - mean, 0)
  std = np.sqrt((deviation ** 2).sum(1, keepdims=True) / count)
  return deviation / (std + 1e-9)


def blend(scorer_scores: np.ndarray, retrieval_scores: np.ndarray,
          known: Optional[np.ndarray] = None, scorer_weight: float = 1.0) -> np.ndarray:
  """The ranking score of each candidate [lists, N]: the two standardised scores added
  (the scorer's times `scorer_weight`: 1 as served; bench/blend_weight_bound.py tries
  others). A candidate the scorer does not know is ordered by its retrieval score alone.
  Entries whose retrieval score is -inf are not in the list (a list shorter than N): they
  stay -inf and do not count in the standardisation."""
  retrieval_scores = np.asarray(retrieval_scores, np.float64)
  in_list = np.isfinite(retrieval_scores)
  known = in_list if known is None else in_list & np.asarray(known, bool)
  blended = (scorer_weight * standardised(scorer_scores, known) +
             standardised(np.where(in_list, retrieval_scores, 0.0), in_list))
  return np.where(in_list, blended, -np.inf)


class _Export(saved_weights.KerasWeights):
  """The scorer's weights, Transform's movie vocabulary as a lookup table, and `score`."""

  def __init__(self, scorer: SequenceScorer, movie_vocabulary: str):
    super().__init__(scorer)
    self.vocabulary = tf.saved_model.Asset(movie_vocabulary)
    self.movie_ids = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
        self.vocabulary, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
        tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER), default_value=-1)

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None, None], tf.string, name=F.USER_HISTORY),
      tf.TensorSpec([None, None], tf.int64, name=F.USER_HISTORY_TIMESTAMPS),
      tf.TensorSpec([None], tf.int64, name=F.TIMESTAMP),
      tf.TensorSpec([None, None], tf.string, name=CANDIDATES)])
  def score(self, user_history, user_history_timestamps, timestamp, candidates):
    scorer, pad = self.model, self.model.num_movies
    ids = self.movie_ids.lookup(user_history)
    read = (ids >= 0) & (ids < pad)  # drops "" padding and movies never trained on
    shape = [None, scorer.length]
    history = tf.ragged.boolean_mask(ids, read)[:, :scorer.length].to_tensor(pad, shape=shape)
    rated_at = tf.ragged.boolean_mask(user_history_timestamps, read)[:, :scorer.length]
    rated_at = tf.cast(rated_at.to_tensor(0, shape=shape), tf.float64)
    days = tf.maximum(tf.cast(timestamp, tf.float64)[:, None] - rated_at, 0) / F.SECONDS_PER_DAY
    gaps = tf.where(history < pad, tf.cast(tf.math.log1p(days), tf.float32), 0.0)
    candidate_ids = self.movie_ids.lookup(candidates)
    known = (candidate_ids >= 0) & (candidate_ids < pad)
    query = scorer.encode(history, gaps)
    scores = scorer.candidate_scores(query, tf.where(known, candidate_ids, 0))
    return {SCORES: tf.where(known, scores, 0.0), KNOWN: known}


def export_core(scorer: SequenceScorer, path: str) -> None:
  """The scorer on dense inputs (CORE_INPUTS) alone: what converts to TensorFlow Lite."""
  history, gaps, candidates = CORE_INPUTS

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None, scorer.length], tf.int32, name=history),
      tf.TensorSpec([None, scorer.length], tf.float32, name=gaps),
      tf.TensorSpec([None, None], tf.int32, name=candidates)])
  def score(history, gaps, candidates):
    return {SCORES: scorer.candidate_scores(scorer.encode(history, gaps), candidates)}

  tf.saved_model.save(saved_weights.KerasWeights(scorer), path,
                      signatures={"serving_default": score})


def export(scorer: SequenceScorer, movie_vocabulary: str, path: str, summary: dict) -> None:
  """Saves `score` under `path` (EXPORT_DIR of the ranking serving dir), its dense core,
  and the training summary beside them."""
  module = _Export(scorer, movie_vocabulary)
  tf.saved_model.save(module, path, signatures={SIGNATURE: module.score})
  export_core(scorer, os.path.join(path, CORE_DIR))
  vocabulary = os.path.join("assets", os.path.basename(movie_vocabulary))  # as saved
  if not tf.io.gfile.exists(os.path.join(path, vocabulary)):
    raise FileNotFoundError(f"the scorer's vocabulary was not saved as {vocabulary} in {path}")
  # What LiteScorer needs to build the core's inputs without the SavedModel.
  model = {"num_movies": scorer.num_movies, "sequence_length": scorer.length,
           "vocabulary_file": vocabulary}
  with tf.io.gfile.GFile(os.path.join(path, INFO_FILE), "w") as f:
    json.dump({**summary, MODEL_INFO: model}, f, indent=2)


class LoadedScorer:
  """An exported scorer, for serving: scores one user's candidates."""

  def __init__(self, path: str):
    self._module = tf.saved_model.load(path)  # keeps its variables alive
    self._score = self._module.signatures[SIGNATURE]
    with open(os.path.join(path, INFO_FILE)) as f:
      self.info = json.load(f)

  def score(self, history, history_seconds, timestamp: int, candidates):
    """(scores [c], known [c]) of one user's candidates (raw movie ids); history newest
    first, `history_seconds` aligned (missing ones: rated at the query's time)."""
    scores, known = self.score_many([history], [history_seconds], [timestamp], [candidates])
    return scores[0], known[0]

  def score_many(self, histories, histories_seconds, timestamps, candidates):
    """(scores [n, c], known [n, c]) of n queries' candidate lists (equal lengths)."""
    width = max([len(h) for h in histories] + [1])
    padded = [list(h) + [""] * (width - len(h)) for h in histories]
    seconds = [list(s) + [t] * (width - len(s))
               for s, t in zip(histories_seconds, timestamps)]
    out = self._score(**{
        F.USER_HISTORY: tf.constant(padded, tf.string),
        F.USER_HISTORY_TIMESTAMPS: tf.constant(seconds, tf.int64),
        F.TIMESTAMP: tf.constant(list(timestamps), tf.int64),
        CANDIDATES: tf.constant([list(c) for c in candidates], tf.string)})
    return out[SCORES].numpy(), out[KNOWN].numpy()


class LiteScorer:
  """The scorer as serving runs it: the bundle's TensorFlow Lite core, its inputs built
  here in NumPy as `_Export.score` builds them in its graph (the same vocabulary, the
  newest `sequence_length` known movies, log-day gaps). One user's 100 candidates took
  ~4.5 ms through the SavedModel's signature and ~0.4 ms here (BENCHMARKS.md, "Serving
  the second stage within issue 12's budget"); tests/test_sequence_scorer.py checks both
  give the same scores."""

  def __init__(self, export_path: str, tflite_path: str):
    with open(os.path.join(export_path, INFO_FILE)) as f:
      self.info = json.load(f)
    model = self.info.get(MODEL_INFO)
    if not model:
      raise ValueError(f"{os.path.join(export_path, INFO_FILE)} has no {MODEL_INFO!r} entry "
                       "(exported before the scorer was served by TensorFlow Lite)")
    self.num_movies, self.length = model["num_movies"], model["sequence_length"]
    with open(os.path.join(export_path, model["vocabulary_file"])) as f:
      lines = [line.rstrip("\n") for line in f]
    # Vocabulary ids past num_movies were never trained on: unknown, as in the graph.
    self.ids = {movie: i for i, movie in enumerate(lines[:self.num_movies])}
    self._core = tflite_runner.TfliteRunner(tflite_path)

  def score(self, history: Sequence[str], history_seconds: Sequence[int], timestamp: int,
            candidates: Sequence[str]):
    """(scores [c], known [c]) of one user's candidates (raw movie ids); history newest
    first, `history_seconds` aligned (missing ones: rated at the query's time)."""
    seconds = list(history_seconds) + [timestamp] * (len(history) - len(history_seconds))
    read = [(self.ids[m], s) for m, s in zip(history, seconds) if m in self.ids][:self.length]
    ids = np.full((1, self.length), self.num_movies, np.int32)
    gaps = np.zeros((1, self.length), np.float32)
    if read:
      ids[0, :len(read)] = [i for i, _ in read]
      gaps[0, :len(read)] = log_day_gaps(timestamp, np.array([s for _, s in read], np.float64))
    candidate_ids = np.array([self.ids.get(m, -1) for m in candidates], np.int32)
    known = candidate_ids >= 0
    if not known.any():
      return np.zeros(len(candidates), np.float32), known
    history_input, gaps_input, candidates_input = CORE_INPUTS
    scores = self._core(**{history_input: ids, gaps_input: gaps,
                            candidates_input: np.where(known, candidate_ids, 0)[None]})
    return np.where(known, scores[SCORES][0], 0.0).astype(np.float32), known
