"""A second stage from the next-item literature: a SASRec-style sequence scorer (issue 12).

Sessions 26-31 (BENCHMARKS.md "Ranking") found that re-rankers fitted on candidate lists
learn a popularity pattern each user's latest rating does not follow, and that a
candidate-aware scorer trained on in-batch negatives is weaker than the two towers
alone. This scorer is what the next-item literature evaluates on this protocol
(SASRec, Kang & McAuley 2018, trained with a softmax over the whole catalogue as in
Klenitskiy & Vasilev 2023): a self-attention encoder over the user's newest HISTORY
earlier movies (movie + position-from-newest + log-days-gap embeddings), whose output is
scored against every movie's embedding. It is trained on every training rating with the
history strictly before it, a softmax over the whole catalogue with the movies the user
had rated by then left out, as the eval leaves them out. It sees no candidate list, so it
cannot learn the lists' popularity pattern.

Its epoch is chosen without the eval rows: each user's newest training rating is held
out of its training as a validation row, scored over the whole catalogue (earlier movies
removed) after every epoch; training stops PATIENCE epochs after the best validation
NDCG@10, and that epoch's scores are the ones reported.

Scored on bench/ranking_quality.py's rows (split `last`: each user's latest rating, the
pushed model's 100 candidates, movies rated by then removed, a list without the next
movie a miss), after every epoch:

  alone     the sequence scorer's order of the 100
  z-blend   its score plus the retrieval score, each standardised within the list
            (equal weights: nothing is fitted on the eval rows)

and the chosen epoch's ratios to retrieval order with 95% paired-bootstrap intervals.

With --time-cut Q, the live-system protocol of bench/second_stage_study.py --time-cut
instead: retrieval and the scorer are trained on the ratings before the time at quantile Q
of the training ratings' times (the scorer's validation rows: each user's newest before
it) and scored on every later rating of a user with an earlier one, its history all the
user's ratings before it, as the service would have them.

  .venv/bin/python -u -m bench.sequence_scorer_study [--data-dir DIR] [--seeds 0 1]
      [--max-epochs 40] [--time-cut 0.8]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from bench import pipeline_run
from bench import ranking_quality as rq
from bench import rerank_features as rf

HISTORY = 50  # newest earlier movies read as the sequence
DIM = 64
BLOCKS = 2
HEADS = 2
DROPOUT = 0.2
LEARNING_RATE = 1e-3
BATCH = 256
PATIENCE = 4  # epochs without a better validation NDCG@10 before training stops


def sequence_scorer(num_movies: int):
  """A Keras model: (history [b, HISTORY] newest first, padded with num_movies; gaps
  [b, HISTORY] log-days) -> logits [b, num_movies] over the catalogue."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  class Block(tf.keras.layers.Layer):
    """Pre-norm self-attention and feed-forward, padding masked out."""

    def __init__(self):
      super().__init__()
      self.attention_norm = tf.keras.layers.LayerNormalization()
      self.attention = tf.keras.layers.MultiHeadAttention(HEADS, DIM // HEADS, dropout=DROPOUT)
      self.feed_forward_norm = tf.keras.layers.LayerNormalization()
      self.hidden = tf.keras.layers.Dense(DIM, activation="relu")
      self.out = tf.keras.layers.Dense(DIM)
      self.dropout = tf.keras.layers.Dropout(DROPOUT)

    def call(self, x, valid, training=False, newest_only=False):
      """x [b, HISTORY, DIM] -> the same, or [b, 1, DIM] (the newest position only: all
      the last block needs to compute, about a third of the training time)."""
      y = self.attention_norm(x)
      queries = y[:, :1] if newest_only else y
      mask = tf.cast(valid[:, None, :] * tf.ones_like(valid[:, :tf.shape(queries)[1]])[..., None],
                     tf.bool)
      x = x[:, :tf.shape(queries)[1]] + self.dropout(
          self.attention(queries, y, attention_mask=mask, training=training), training=training)
      x = x + self.dropout(self.out(self.hidden(self.feed_forward_norm(x))), training=training)
      return x * valid[:, :tf.shape(queries)[1], None]

  class SequenceScorer(tf.keras.Model):

    def __init__(self):
      super().__init__()
      self.movie = tf.keras.layers.Embedding(num_movies + 1, DIM)  # + padding
      self.position = tf.keras.layers.Embedding(HISTORY, DIM)
      self.gap = tf.keras.layers.Dense(DIM)
      self.dropout = tf.keras.layers.Dropout(DROPOUT)
      self.blocks = [Block() for _ in range(BLOCKS)]
      self.norm = tf.keras.layers.LayerNormalization()
      self.bias = self.add_weight(name="movie_bias", shape=[num_movies], initializer="zeros")

    def call(self, inputs, training=False):
      history, gaps = inputs
      valid = tf.cast(history < num_movies, tf.float32)
      x = (self.movie(history) * np.sqrt(DIM) + self.position(tf.range(HISTORY))[None]
           + self.gap(gaps[..., None]))
      x = self.dropout(x, training=training) * valid[..., None]
      for i, block in enumerate(self.blocks):
        x = block(x, valid, training=training, newest_only=i == len(self.blocks) - 1)
      query = self.norm(x[:, 0])  # the newest movie's position
      return tf.matmul(query, self.movie.embeddings[:num_movies], transpose_b=True) + self.bias

  return SequenceScorer()


class Rows:
  """Queries of the scorer: their histories, targets and the movies to leave out."""

  def __init__(self, data, users, items, seconds):
    self.items = np.asarray(items, np.int32)
    self.pad = len(data.catalogue_ids)
    self.history, self.gaps = rf.newest_with_gaps(rf.cut_histories(
        data.user_train_items, data.user_train_seconds, users, seconds), seconds, self.pad,
                                                  HISTORY)
    from components.retrieval_evaluator import eval_set  # pylint: disable=g-import-not-at-top
    # Left out of the softmax, as the eval leaves them out: what the user had rated by
    # then (their ratings of the same second too), but the target.
    self.rated = eval_set.user_items_until(data.user_train_items, data.user_train_seconds,
                                           users, seconds, "right")

  def with_history(self) -> "Rows":
    """The rows whose history is not empty (a user's first ratings have nothing to read)."""
    keep = np.flatnonzero(self.history[:, 0] != self.pad)
    out = object.__new__(Rows)
    out.pad, out.items = self.pad, self.items[keep]
    out.history, out.gaps = self.history[keep], self.gaps[keep]
    out.rated = [self.rated[i] for i in keep]
    return out

  def __len__(self):
    return len(self.items)

  def left_out(self, rows):
    """[n, 2] (position in `rows`, movie) pairs to leave out of those rows' softmax."""
    pairs = [np.stack([np.full(len(r), i), r], 1) for i, r in
             enumerate(self.rated[row][self.rated[row] != self.items[row]] for row in rows)]
    return np.concatenate(pairs).astype(np.int32) if pairs else np.zeros((0, 2), np.int32)


def newest_training_rows(users: np.ndarray, seconds: np.ndarray) -> np.ndarray:
  """[rows] True at each user's newest training rating (one per user)."""
  order = np.lexsort((np.arange(len(users)), seconds, users))
  newest = np.zeros(len(users), bool)
  newest[order[np.r_[users[order][1:] != users[order][:-1], True]]] = True
  return newest


def full_catalogue_rates(logits: np.ndarray, rows: Rows):
  """(HR@10, NDCG@10) of rows scored over the whole catalogue, earlier movies removed."""
  logits = logits.copy()
  left_out = rows.left_out(np.arange(len(rows)))
  logits[left_out[:, 0], left_out[:, 1]] = -np.inf
  rank = (logits > logits[np.arange(len(logits)), rows.items][:, None]).sum(1)
  hit = rank < rq.K
  return hit.mean(), np.where(hit, 1 / np.log2(rank + 2), 0).mean()


def train(data, users, items, seconds, eval_rows: Rows, evals, max_epochs: int, seed: int,
          log):
  """Trains on the ratings (users, items, seconds) but each user's newest (the validation
  rows); yields (epoch, validation (HR@10, NDCG@10), scores of the eval lists `evals`
  [eval rows, N] of eval_rows) after each epoch."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(seed)
  num_movies = len(data.catalogue_ids)
  validation = newest_training_rows(users, seconds)
  fit = ~validation
  train_rows = Rows(data, users[fit], items[fit], seconds[fit]).with_history()
  validation_rows = Rows(data, users[validation], items[validation], seconds[validation])
  log(f"{len(train_rows):,} training ratings with a history, {len(validation_rows):,} "
      f"validation (each user's newest), {len(eval_rows):,} eval")
  model = sequence_scorer(num_movies)
  optimizer = tf.keras.optimizers.Adam(LEARNING_RATE)
  spec = tf.TensorSpec

  @tf.function(input_signature=[spec([None, HISTORY], tf.int32), spec([None, HISTORY], tf.float32),
                                spec([None], tf.int32), spec([None, 2], tf.int32)])
  def step(history, gaps, targets, left_out):
    with tf.GradientTape() as tape:
      logits = model((history, gaps), training=True)
      logits -= 1e9 * tf.minimum(tf.scatter_nd(
          left_out, tf.ones(tf.shape(left_out)[:1]), tf.shape(logits)), 1.0)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  @tf.function(input_signature=[spec([None, HISTORY], tf.int32), spec([None, HISTORY], tf.float32)])
  def logits_of(history, gaps):
    return model((history, gaps), training=False)

  def all_logits(rows):
    return np.concatenate([logits_of(rows.history[a:a + 512], rows.gaps[a:a + 512]).numpy()
                           for a in range(0, len(rows), 512)])

  rng = np.random.default_rng(seed)
  for epoch in range(1, max_epochs + 1):
    order = rng.permutation(len(train_rows))
    for start in range(0, len(order), BATCH):
      rows = order[start:start + BATCH]
      step(train_rows.history[rows], train_rows.gaps[rows], train_rows.items[rows],
           train_rows.left_out(rows))
    yield (epoch, full_catalogue_rates(all_logits(validation_rows), validation_rows),
           np.take_along_axis(all_logits(eval_rows), evals, 1))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data-dir")
  parser.add_argument("--max-epochs", type=int, default=40)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
  parser.add_argument("--time-cut", type=float, default=0.0,
                      help="the live-system protocol instead: retrieval and the scorer "
                      "trained on the ratings before the time at this quantile of the "
                      "training ratings' times, scored on every later rating")
  args = parser.parse_args(argv)
  from components import examples_io  # pylint: disable=g-import-not-at-top
  from modules import features as F  # pylint: disable=g-import-not-at-top
  from modules import retrieval_export, retrieval_model  # pylint: disable=g-import-not-at-top
  from tfx.utils import path_utils  # pylint: disable=g-import-not-at-top

  config, run = pipeline_run.run(args.data_dir)
  loaded = rq.RunRows.load(run)
  data = loaded.data
  with tempfile.TemporaryDirectory() as variant_dir:
    if args.time_cut:
      cut, fit, after = loaded.time_cut(args.time_cut)
      pipeline_run.train_retrieval(run, {}, variant_dir, keep=lambda ids: ids[
          retrieval_model.QUERY_SECONDS_FEATURE] < cut)
      pair = retrieval_export.RetrievalModelPair(variant_dir)
      serialized = examples_io.read_serialized(loaded.examples, F.TRAIN_SPLIT)
      query = ([serialized[r] for r in after], loaded.users[after], loaded.items[after],
               loaded.seconds[after])
      protocol = (f"time cut at quantile {args.time_cut} ({cut}): {len(fit):,} ratings "
                  f"before it, {len(after):,} later ratings scored")
      known = np.isin(loaded.users[after], loaded.users[fit])
      groups = {"users who rated before the cut": known, "users new after it": ~known}
    else:
      fit = np.flatnonzero(loaded.keep)
      pair = retrieval_export.RetrievalModelPair(path_utils.serving_model_dir(
          run.output("RetrievalTrainer", "model").uri))
      query = (data.eval_serialized, data.eval_users, data.eval_items, data.eval_seconds)
      protocol = f"split {config.split_method}: {len(query[1]):,} eval ratings"
      groups = {}
    top, retrieval_scores, _, labels, _ = rq.retrieve(pair, data, *query)
  eval_rows = Rows(data, *query[1:])
  by_score = lambda scores: np.argsort(-scores, axis=1, kind="stable")
  blend = lambda scores: rq.standardised(scores) + rq.standardised(retrieval_scores)
  by_retrieval = np.broadcast_to(np.arange(rq.N_RETRIEVED), labels.shape)
  base = rq.top_k_rates(by_retrieval, labels)
  print(f"{config.data_dir}, {protocol}; retrieval order HR@10 {base[0]:.4f}, NDCG@10 "
        f"{base[1]:.4f}\n")
  for seed in args.seeds:
    started = time.monotonic()
    print(f"seed {seed}")
    print(f"{'epoch':>5}{'validation':>18}" + "".join(
        f"{name:>28}" for name in ("alone", "z-blend")))
    best = (-1.0, 0, None)
    for epoch, validation, scores in train(
        data, loaded.users[fit], loaded.items[fit], loaded.seconds[fit], eval_rows, top,
        args.max_epochs, seed, print):
      cells = [rq.top_k_rates(by_score(scores), labels),
               rq.top_k_rates(by_score(blend(scores)), labels)]
      print(f"{epoch:>5}{validation[0]:>9.4f}{validation[1]:>9.4f}" + "".join(
          f"{hr:>8.4f}{ndcg:>8.4f} ({hr / base[0]:.3f}/{ndcg / base[1]:.3f})"
          for hr, ndcg in cells), flush=True)
      if validation[1] > best[0]:
        best = (validation[1], epoch, scores)
      elif epoch - best[1] >= PATIENCE:
        break
    print(f"seed {seed}: {time.monotonic() - started:.0f} s for {epoch} epochs; the best "
          f"validation NDCG@10 at epoch {best[1]}")
    for name, scores in (("alone", best[2]), ("z-blend", blend(best[2]))):
      for metric, new, old in zip(("HR@10", "NDCG@10"), rq.row_rates(by_score(scores), labels),
                                  rq.row_rates(by_retrieval, labels)):
        print(f"  epoch {best[1]}, {name} / retrieval order, {metric}: "
              f"{rq.ratio_cell(new, old)} (95% paired bootstrap)" + "".join(
                  f"; {group} ({int(rows.sum()):,}) {rq.ratio_cell(new[rows], old[rows])}"
                  for group, rows in groups.items()))
  return 0


if __name__ == "__main__":
  pipeline_run.exit_skipping_finalization(main())
