"""A second stage the two towers cannot be: a candidate-aware scorer (issue 12).

The query tower must embed a user before it sees any candidate. A second stage scores only
the retrieved 100, so it can let each candidate attend over the user's history (target
attention, as DIN does): "which of my earlier movies is this one like?". Here that scorer
is trained the way retrieval is, not on candidate lists: on every training rating, its
history the user's ratings strictly before it, a softmax over the batch's other movies
with their sampling probability subtracted (logQ), so it sees what the latest rating sees
(sessions 26-30 found that re-rankers fitted on candidate lists learn a popularity pattern
the latest rating does not follow; BENCHMARKS.md "Ranking").

Scored on bench/ranking_quality.py's rows (ml-100k, split `last`: each user's latest
rating, the pushed model's 100 candidates, movies rated by then removed, a list without
the next movie is a miss), after every epoch:

  alone        the candidate-aware scorer's order of the 100
  z-blend      its score plus the retrieval score, each standardised within the list
               (equal weights: nothing is fitted on the eval rows)
  rank-blend   the sum of the two orders' ranks

and, after the last epoch, the z-blend's ratio to retrieval order with a 95% paired
bootstrap interval over the eval lists (how much of a ratio 943 rows can resolve).

  .venv/bin/python -m bench.target_attention_study [--data-dir DIR] [--epochs 14]
      [--seeds 0 1]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from bench import pipeline_run
from bench import ranking_quality as rq
from bench import rerank_features as rf

HISTORY = 30  # newest earlier movies each candidate attends over
DIM = 48
BATCH = 512
LEARNING_RATE = 6e-3
L2 = 1e-6
USER_DROPOUT = 0.3


def target_attention_model(num_users: int, num_movies: int):
  """score(users [b], history [b, L], gaps [b, L], candidates [b, C]) -> [b, C]: each
  candidate's embedding against (its attention read-out of the history + the history's
  mean + the user's embedding), plus a per-movie bias."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  class TargetAttention(tf.keras.Model):

    def __init__(self):
      super().__init__()
      self.movie = tf.keras.layers.Embedding(num_movies + 1, DIM)  # + padding
      self.key = tf.keras.layers.Embedding(num_movies + 1, DIM)
      self.user = tf.keras.layers.Embedding(num_users, DIM)
      self.position = tf.keras.layers.Embedding(HISTORY, DIM)
      self.gap_weight = tf.keras.layers.Dense(1)
      self.bias = tf.keras.layers.Embedding(num_movies + 1, 1)

    def score(self, users, history, gaps, candidates, training=False):
      valid = tf.cast(history < num_movies, tf.float32)
      keys = self.key(history) + self.position(tf.range(HISTORY))[None]
      values = self.movie(history)
      c = self.movie(candidates)
      logits = (tf.einsum("bcd,bld->bcl", c, keys) / np.sqrt(DIM)
                + self.gap_weight(gaps[..., None])[..., 0][:, None]
                - 1e9 * (1 - valid[:, None]))
      weights = tf.nn.softmax(logits, -1) * tf.reduce_max(valid, -1)[:, None, None]
      read = tf.einsum("bcl,bld->bcd", weights, values)
      mean = tf.reduce_sum(values * valid[..., None], 1) / tf.maximum(
          tf.reduce_sum(valid, 1, keepdims=True), 1.0)
      user = self.user(users)
      if training:
        user = tf.nn.dropout(user, USER_DROPOUT)
      return tf.reduce_sum(c * (read + (mean + user)[:, None]), -1) + self.bias(candidates)[..., 0]

  return TargetAttention()


def train_and_score(data, loaded, evals, epochs: int, seed: int):
  """Trains the scorer on the run's training ratings; after each epoch, its scores of the
  eval lists `evals` (rq.retrieve's candidates): a list of [n, 100]."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(seed)
  num_movies = len(data.catalogue_ids)
  keep = loaded.keep
  users, items, seconds = loaded.users[keep], loaded.items[keep], loaded.seconds[keep]
  cut = lambda users, times: rf.newest_with_gaps(rf.cut_histories(
      data.user_train_items, data.user_train_seconds, users, times), times, num_movies,
                                                  HISTORY)
  history, gaps = cut(users, seconds)
  eval_history, eval_gaps = cut(data.eval_users, data.eval_seconds)
  log_q = np.log(np.bincount(items, minlength=num_movies) / len(items) + 1e-9).astype(np.float32)
  model = target_attention_model(len(data.user_ids), num_movies)
  optimizer = tf.keras.optimizers.Adam(LEARNING_RATE)

  @tf.function(reduce_retracing=True)
  def step(u, h, g, positives):
    n = tf.shape(positives)[0]
    with tf.GradientTape() as tape:
      logits = (model.score(u, h, g, tf.tile(positives[None], [n, 1]), training=True)
                - tf.gather(log_q, positives)[None])
      # The batch's other rows of the same movie are not negatives.
      same = tf.cast(tf.equal(positives[:, None], positives[None]), tf.float32) - tf.eye(n)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          tf.range(n), logits - 1e9 * same))
      loss += L2 * tf.add_n([tf.reduce_sum(v ** 2) for v in model.trainable_variables])
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  rng = np.random.default_rng(seed)
  scores = []
  for _ in range(epochs):
    order = rng.permutation(len(items))
    for start in range(0, len(order) - BATCH + 1, BATCH):
      rows = order[start:start + BATCH]
      step(users[rows].astype(np.int32), history[rows], gaps[rows], items[rows].astype(np.int32))
    scores.append(np.concatenate([model.score(
        np.asarray(data.eval_users[a:a + 256], np.int32), eval_history[a:a + 256],
        eval_gaps[a:a + 256], evals[a:a + 256].astype(np.int32)).numpy()
                                  for a in range(0, len(evals), 256)]))
  return scores


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data-dir")
  parser.add_argument("--epochs", type=int, default=14)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
  args = parser.parse_args(argv)
  from modules import retrieval_export  # pylint: disable=g-import-not-at-top
  from tfx.utils import path_utils  # pylint: disable=g-import-not-at-top

  config, run = pipeline_run.run(args.data_dir)
  loaded = rq.RunRows.load(run)
  data = loaded.data
  pushed = retrieval_export.RetrievalModelPair(path_utils.serving_model_dir(
      run.output("RetrievalTrainer", "model").uri))
  top, retrieval_scores, _, labels, _ = rq.retrieve(
      pushed, data, data.eval_serialized, data.eval_users, data.eval_items, data.eval_seconds)
  rates = lambda scores: rq.top_k_rates(np.argsort(-scores, axis=1, kind="stable"), labels)
  ranks = lambda scores: np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1)
  in_order = -np.broadcast_to(np.arange(rq.N_RETRIEVED), labels.shape).astype(np.float32)
  from modules import sequence_scorer  # pylint: disable=g-import-not-at-top
  blend = lambda scores: sequence_scorer.blend(scores, retrieval_scores)
  base = rates(in_order)
  print(f"{config.data_dir}, split {config.split_method}: {len(labels):,} eval ratings; "
        f"retrieval order HR@10 {base[0]:.4f}, NDCG@10 {base[1]:.4f}\n")
  print(f"{'seed':>4}{'epoch':>6}" + "".join(
      f"{name:>28}" for name in ("alone", "z-blend", "rank-blend")))
  for seed in args.seeds:
    started = time.monotonic()
    for epoch, scores in enumerate(train_and_score(data, loaded, top, args.epochs, seed), 1):
      cells = [rates(scores), rates(blend(scores)),
               rates(-(ranks(scores) + ranks(retrieval_scores)) - 1e-3 * np.arange(rq.N_RETRIEVED))]
      print(f"{seed:>4}{epoch:>6}" + "".join(
          f"{hr:>8.4f}{ndcg:>8.4f} ({hr / base[0]:.2f}/{ndcg / base[1]:.2f})" for hr, ndcg in cells))
    print(f"seed {seed}: {time.monotonic() - started:.0f} s for {args.epochs} epochs")
    # How far the last epoch's z-blend is from retrieval order, beyond the 943 rows' noise.
    by_blend = np.argsort(-blend(scores), axis=1, kind="stable")
    by_retrieval = np.argsort(-in_order, axis=1, kind="stable")
    for name, new, old in zip(("HR@10", "NDCG@10"), rq.row_rates(by_blend, labels),
                              rq.row_rates(by_retrieval, labels)):
      print(f"  z-blend / retrieval order, {name}: {rq.ratio_cell(new, old)} (95% paired "
            "bootstrap)")
  return 0


if __name__ == "__main__":
  pipeline_run.exit_skipping_finalization(main())
