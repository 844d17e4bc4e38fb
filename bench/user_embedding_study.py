"""Would a per-user embedding make the sequence scorer a better second stage? (issue 12)

On split `last` the retrieval towers hold an embedding per user, learned from all of the
user's earlier ratings (worth 0.202 -> 0.225 HR@10 to retrieval, BENCHMARKS.md), and the
sequence scorer reads only the 50 newest movies. This trains the product's scorer
(modules/sequence_scorer.py, RankingHParams' settings; its epoch chosen on validation as
the RankingTrainer chooses it) twice on the same rows, without and with a user embedding
added to its query (SSE-PT's idea, Wu et al. 2020). With it, each training query's user
is replaced by an "unknown user" row with probability --user-dropout, which is what a
user new since training gets. Scored as bench/sequence_scorer_study.py scores: alone,
and z-blended with the retrieval score, × retrieval order on the same 100 candidates.

  .venv/bin/python -u -m bench.user_embedding_study [--data-dir DIR] [--seeds 0]
      [--user-dropout 0.25] [--time-cut 0.8] [--ranking sequence_blocks=1 ...]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from bench import pipeline_run
from bench import sequence_scorer_study as study


def train(lists, hparams, user_dropout, eval_users, on_epoch):
  """The scorer's training loop (modules/sequence_trainer.train) with each query's user
  fed to the model; user_dropout None: no user embedding. Returns the best epoch."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from modules import sequence_scorer, sequence_trainer  # pylint: disable=g-import-not-at-top

  class UserScorer(sequence_scorer.SequenceScorer):
    def __init__(self, num_movies, hparams, num_users):
      super().__init__(num_movies, hparams)
      self.user = tf.keras.layers.Embedding(  # + the unknown user's row
          num_users + 1, hparams.sequence_dim,
          embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.01))

    def user_query(self, history, gaps, users, training=False):
      query = self.encode(history, gaps, training=training)
      return query if user_dropout is None else query + self.user(users)

  tf.keras.utils.set_random_seed(hparams.seed)
  loaded = lists.loaded
  users, movies, seconds = (loaded.users[lists.fit], loaded.items[lists.fit],
                            loaded.seconds[lists.fit])
  unknown = len(loaded.data.user_ids)
  log = sequence_trainer.RatingLog(users, movies, seconds, pad=lists.num_movies)
  validation = sequence_trainer.newest_per_user(users, seconds)
  fit = log.queries(users[~validation], movies[~validation], seconds[~validation])
  fit_users = users[~validation][fit.before > fit.first]  # as with_history keeps them
  fit = fit.with_history()
  held_out = log.queries(users[validation], movies[validation], seconds[validation])
  model = UserScorer(lists.num_movies, hparams, unknown)
  optimizer = tf.keras.optimizers.Adam(hparams.sequence_learning_rate)
  length, spec = hparams.sequence_length, tf.TensorSpec
  logits = lambda h, g, u, training: (tf.matmul(
      model.user_query(h, g, u, training), model.movie.embeddings[:model.num_movies],
      transpose_b=True) + model.movie_bias)

  @tf.function(autograph=False, input_signature=[
      spec([None, length], tf.int32), spec([None, length], tf.float32),
      spec([None], tf.int32), spec([None], tf.int32), spec([None, 2], tf.int32)])
  def step(history, gaps, users, targets, left_out):
    with tf.GradientTape() as tape:
      out = logits(history, gaps, users, True)
      out -= 1e9 * tf.minimum(tf.scatter_nd(left_out, tf.ones(tf.shape(left_out)[:1]),
                                            tf.shape(out)), 1.0)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, out))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))

  queries = lists.eval_queries()  # the scored ratings' histories: the same every epoch
  rng, started, best = np.random.default_rng(hparams.seed), time.monotonic(), (-1.0, 0)
  batches = lambda n: (np.arange(s, min(s + 512, n)) for s in range(0, n, 512))
  for epoch in range(1, hparams.sequence_max_epochs + 1):
    order = rng.permutation(len(fit))
    for start in range(0, len(order), hparams.sequence_batch_size):
      rows = order[start:start + hparams.sequence_batch_size]
      batch_users = fit_users[rows].copy()
      if user_dropout:
        batch_users[rng.random(len(rows)) < user_dropout] = unknown
      step(*fit.histories(rows, length), batch_users.astype(np.int32),
           fit.targets[rows].astype(np.int32), fit.left_out(rows))
    hits = gains = 0.0
    for rows in batches(len(held_out)):
      h, g = sequence_trainer.full_catalogue_rates(logits(
          *held_out.histories(rows, length), users[validation][rows], False).numpy(),
          held_out, rows)
      hits, gains = hits + h, gains + g
    scores = np.concatenate([model.candidate_scores(model.user_query(
        *queries.histories(rows, length), eval_users[rows]), lists.top[rows]).numpy()
                             for rows in batches(len(queries))])
    on_epoch(epoch, scores, hits / len(held_out), gains / len(held_out),
             time.monotonic() - started)
    if gains > best[0]:
      best = (gains, epoch)
    elif epoch - best[1] >= hparams.sequence_patience:
      break
  return best[1]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data-dir")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0])
  parser.add_argument("--user-dropout", type=float, default=0.25)
  parser.add_argument("--time-cut", type=float, default=0.0)
  parser.add_argument("--ranking", action="append", metavar="NAME=VALUE")
  args = parser.parse_args(argv)
  lists = study.load_lists(args.data_dir, args.time_cut)
  from modules.hparams import RankingHParams  # pylint: disable=g-import-not-at-top
  from movrec import paths  # pylint: disable=g-import-not-at-top
  base = study.retrieval_order_rates(lists)
  print(f"{lists.config.data_dir}, {lists.protocol}; retrieval order HR@10 {base[0]:.4f}, "
        f"NDCG@10 {base[1]:.4f}\n")
  trained = np.zeros(len(lists.loaded.data.user_ids) + 1, bool)
  trained[lists.loaded.users[lists.fit]] = True
  eval_users = np.asarray(lists.query[1], np.int64)
  eval_users = np.where(trained[eval_users], eval_users, len(trained) - 1).astype(np.int32)
  for seed in args.seeds:
    hparams = RankingHParams.from_dict({**paths.key_values(args.ranking, "--ranking"),
                                        "seed": seed})
    for user_dropout in (None, args.user_dropout):
      label = ("no user embedding" if user_dropout is None else
               f"user embedding, dropout {user_dropout}")
      print(f"seed {seed}, {label}" + "".join(f", {p}" for p in args.ranking or []))
      scores_by_epoch = {}

      def on_epoch(epoch, scores, hr, ndcg, seconds, scores_by_epoch=scores_by_epoch):
        scores_by_epoch[epoch] = scores
        print(study.epoch_line(lists, epoch, scores, base) +
              f"  validation {hr:.4f} / {ndcg:.4f}, {seconds:.0f} s", flush=True)

      best = train(lists, hparams, user_dropout, eval_users, on_epoch)
      study.report(lists, scores_by_epoch, best, f"seed {seed}, {label}, ")
  return 0


if __name__ == "__main__":
  pipeline_run.exit_skipping_finalization(main())
