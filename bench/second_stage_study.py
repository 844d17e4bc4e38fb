"""What else a second stage was tried with (issue 12), on bench/ranking_quality.py's rows.

Same run, eval rows and top-100 lists of the pushed retrieval model as
bench/ranking_quality.py (ml-100k, split `last`: each user's latest rating, the query
sees only earlier ratings, earlier movies removed, a list without the next movie is a
miss). Every variant re-orders the pushed model's 100 candidates and is compared with
their retrieval order on the same rows:

  holdout lists        the list-wise re-ranker (bench/rerank_features.py's features)
                       trained on the candidates of each user's newest training ratings,
                       retrieved by a model that did not train on them
  ... later masked     the same, with the movies the user rated at or after the list's
                       time left out of its softmax (they are not "wrong" next movies,
                       only later ones)
  in-sample lists      trained on the pushed model's own lists for every training rating
                       (or each user's newest 5), which that model trained on
  + popularity vs recent
                       with the candidate's popularity relative to the user's 5 newest
                       movies' (each as it stood at the list's time)
  learned ranker       own 32-d user and movie embeddings, the candidate attending over
                       the user's 20 newest earlier movies, crosses and the features,
                       softmax over the list, on the in-sample lists; by epoch
  retrieval ensemble   the mean score of the pushed model and retrieval models trained
                       with other seeds (7, 8) and with the sequence encoder

  .venv/bin/python -m bench.second_stage_study [--data-dir DIR] [--holdout 5]
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from bench import pipeline_run
from bench import ranking_quality as rq
from bench import rerank_features as rf

RECENT = 5  # newest earlier movies the popularity-vs-recent features compare with
LEARNED_HISTORY = 20  # newest earlier movies the learned ranker attends over
ENSEMBLE = {"seed 7": {"seed": 7}, "seed 8": {"seed": 8},
            "sequence encoder": {"sequence_length": 50}}


def popularity_vs_recent(log, histories, times, x):
  """[n, K, 2]: candidate log-share minus the mean (and the lowest) log-share of the
  user's RECENT newest earlier movies, all counted before the list's time."""
  out = np.zeros(x.shape[:2] + (2,), np.float32)
  share = x[..., rf.FEATURES.index("popularity_all")]
  for i, ((items, _), t) in enumerate(zip(histories, times)):
    recent = items[-RECENT:]
    if len(recent):
      counts = log.counts(recent, np.full(len(recent), t))
      theirs = np.log1p(counts) - np.log1p(log.total(np.array([t])))[0]
      out[i, :, 0], out[i, :, 1] = share[i] - theirs.mean(), share[i] - theirs.min()
  return out


def later_rated(data, users, times, items, top):
  """[n, K] True for candidates the user rated at or after the list's time (training
  ratings), other than the list's own next movie."""
  mask = np.zeros(top.shape, bool)
  for i, (user, t) in enumerate(zip(users, times)):
    later = data.user_train_items[user][data.user_train_seconds[user] >= t]
    mask[i] = np.isin(top[i], later[later != items[i]])
  return mask


def newest(histories, n, pad):
  """[rows, n] each history's n newest movies, newest first, padded with `pad`."""
  out = np.full((len(histories), n), pad, np.int32)
  for i, (items, _) in enumerate(histories):
    recent = items[-n:][::-1]
    out[i, :len(recent)] = recent
  return out


def learned_ranker(num_users, num_movies, num_features, mean, std, dim=32):
  """Scores [b, K] of candidates [b, K] for users [b] with newest movies [b, L] (padded
  with num_movies) and features [b, K, F]."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  user = tf.keras.Input((), dtype=tf.int32)
  recent = tf.keras.Input((LEARNED_HISTORY,), dtype=tf.int32)
  candidates = tf.keras.Input((None,), dtype=tf.int32)
  features = tf.keras.Input((None, num_features))
  l2 = tf.keras.regularizers.l2(1e-5)
  movie_embedding = tf.keras.layers.Embedding(num_movies + 1, dim, embeddings_regularizer=l2)
  c, h = movie_embedding(candidates), movie_embedding(recent)
  u = tf.keras.layers.Embedding(num_users, dim, embeddings_regularizer=l2)(user)
  valid = tf.cast(recent < num_movies, tf.float32)
  any_valid = tf.reduce_max(valid, -1)[:, None]
  similarity = tf.einsum("bkd,bld->bkl", c, h) / np.sqrt(dim) - 1e9 * (1 - valid[:, None])
  attended = tf.einsum("bkl,bld->bkd", tf.nn.softmax(similarity, -1), h)
  mean_h = tf.reduce_sum(h * valid[..., None], 1) / tf.maximum(
      tf.reduce_sum(valid, 1, keepdims=True), 1.0)
  crosses = tf.stack([tf.einsum("bkd,bd->bk", c, u), tf.einsum("bkd,bd->bk", c, mean_h),
                      tf.reduce_sum(c * attended, -1) * any_valid,
                      tf.reduce_max(similarity, -1) * any_valid], -1)
  z = tf.concat([crosses, (features - mean) / std,
                 tf.keras.layers.Dropout(0.2)(c * mean_h[:, None])], -1)
  z = tf.keras.layers.Dense(64, activation="relu")(z)
  return tf.keras.Model([user, recent, candidates, features],
                        tf.squeeze(tf.keras.layers.Dense(1)(z), -1))


def ensemble_scores(run, data, top, overrides):
  """The scores of a retrieval model trained with `overrides` for the candidates `top`."""
  from modules import retrieval_export  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as serving_dir:
    pipeline_run.train_retrieval(run, overrides, serving_dir)
    pair = retrieval_export.RetrievalModelPair(serving_dir)
    candidates, _ = pair.embed_candidate_examples(data.catalogue_serialized)
    queries = pair.embed_query_examples(data.eval_serialized)
  return np.einsum("nd,nkd->nk", queries, candidates[top])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data-dir")
  parser.add_argument("--holdout", type=int, default=5)
  args = parser.parse_args(argv)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from components import examples_io  # pylint: disable=g-import-not-at-top
  from modules import features as F  # pylint: disable=g-import-not-at-top
  from modules import ranking_holdout, retrieval_export  # pylint: disable=g-import-not-at-top
  from tfx.utils import path_utils  # pylint: disable=g-import-not-at-top

  started = time.monotonic()
  config, run = pipeline_run.run(args.data_dir)
  loaded = rq.RunRows.load(run)
  examples, train, data = loaded.examples, loaded.train, loaded.data
  keep, t_users, t_items, t_seconds = loaded.keep, loaded.users, loaded.items, loaded.seconds
  train_serialized = examples_io.read_serialized(examples, F.TRAIN_SPLIT)
  records = examples_io.movie_records(data.catalogue_serialized)
  log = rf.RatingLog(t_items[keep], t_seconds[keep], train[F.USER_RATING][keep],
                     len(data.catalogue_ids))
  transitions = rf.TransitionLog(data.user_train_items, data.user_train_seconds,
                                 len(data.catalogue_ids))

  def lists(pair, rows):
    """Top-100 lists of training `rows` (None: the eval rows) with their features."""
    if rows is None:
      query = (data.eval_serialized, data.eval_users, data.eval_items, data.eval_seconds)
    else:
      query = ([train_serialized[r] for r in rows], t_users[rows], t_items[rows],
               t_seconds[rows])
    top, scores, histories, y, embeddings = rq.retrieve(pair, data, *query)
    catalogue = rf.Catalogue.build([r["genres"] for r in records],
                                   [r["year"] for r in records], embeddings)
    x = rf.features(log, transitions, catalogue, histories, query[3], top, scores)
    extra = popularity_vs_recent(log, histories, query[3], x)
    return dict(top=top, scores=scores, y=y, x=x, x_extra=np.concatenate([x, extra], -1),
                users=query[1], items=query[2], times=query[3], histories=histories)

  pushed = retrieval_export.RetrievalModelPair(path_utils.serving_model_dir(
      run.output("RetrievalTrainer", "model").uri))
  evals = lists(pushed, None)
  in_sample = lists(pushed, np.flatnonzero(keep))
  held = np.flatnonzero(ranking_holdout.holdout_mask(
      t_users, t_seconds, args.holdout, len(data.user_ids)) & keep)
  with tempfile.TemporaryDirectory() as variant_dir:
    pipeline_run.train_retrieval(run, {"holdout_per_user": args.holdout}, variant_dir)
    holdout = lists(retrieval_export.RetrievalModelPair(variant_dir), held)

  ye = evals["y"]
  rates = lambda scores: rq.top_k_rates(np.argsort(-scores, axis=1, kind="stable"), ye)
  retrieval_order = -np.broadcast_to(np.arange(rq.N_RETRIEVED), ye.shape).astype(np.float32)
  results = [("pushed retrieval, retrieval order", rates(retrieval_order))]
  with_next = lambda lst: lst["y"].sum(1) > 0
  h = with_next(holdout)
  masked = later_rated(data, holdout["users"], holdout["times"], holdout["items"],
                       holdout["top"])
  for name, hidden in [("linear", ()), ("MLP 32", (32,))]:
    results.append((f"holdout lists, {name}", rates(rq.fit_reranker(
        holdout["x"][h], holdout["y"][h], evals["x"], hidden=hidden))))
    results.append((f"holdout lists, later masked, {name}", rates(rq.fit_reranker(
        holdout["x"][h], holdout["y"][h], evals["x"], hidden=hidden, excluded=masked[h]))))

  order = np.lexsort((-in_sample["times"], in_sample["users"]))
  position = np.empty(len(order), np.int64)  # 0 = the user's newest training rating
  first = np.r_[True, in_sample["users"][order][1:] != in_sample["users"][order][:-1]]
  starts = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
  position[order] = np.arange(len(order)) - starts
  s = with_next(in_sample)
  for newest_n, label in [(None, "every rating"), (5, "newest 5 a user")]:
    rows = s if newest_n is None else s & (position < newest_n)
    for key, extra in [("x", ""), ("x_extra", " + popularity vs recent")]:
      for name, hidden in [("linear", ()), ("MLP 32", (32,))]:
        results.append((f"in-sample lists ({label}){extra}, {name}", rates(rq.fit_reranker(
            in_sample[key][rows], in_sample["y"][rows], evals[key], hidden=hidden,
            epochs=5 if newest_n is None else 10))))

  tf.keras.utils.set_random_seed(0)
  flat = in_sample["x_extra"][s][:5000].reshape(-1, evals["x_extra"].shape[-1])
  model = learned_ranker(len(data.user_ids), len(data.catalogue_ids), flat.shape[-1],
                         flat.mean(0), flat.std(0) + 1e-6)
  model.compile(tf.keras.optimizers.Adam(1e-3),
                loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True))
  pad = len(data.catalogue_ids)
  inputs = lambda lst, rows: [lst["users"][rows].astype(np.int32),
                              newest([lst["histories"][i] for i in np.flatnonzero(rows)],
                                     LEARNED_HISTORY, pad),
                              lst["top"][rows].astype(np.int32), lst["x_extra"][rows]]
  train_inputs, eval_inputs = inputs(in_sample, s), inputs(evals, np.ones(len(ye), bool))
  for epoch in range(1, 5):
    model.fit(train_inputs, in_sample["y"][s], batch_size=128, epochs=1, verbose=0)
    results.append((f"learned ranker, epoch {epoch}",
                    rates(model.predict(eval_inputs, batch_size=256, verbose=0))))

  total, members = evals["scores"].copy(), ["pushed"]
  for name, overrides in ENSEMBLE.items():
    scores = ensemble_scores(run, data, evals["top"], overrides)
    results.append((f"retrieval, {name}, alone on these candidates", rates(scores)))
    total += scores
    members.append(name)
    results.append((f"retrieval ensemble: {' + '.join(members)}", rates(total)))

  base_hr, base_ndcg = results[0][1]
  print(f"{config.data_dir}, split {config.split_method}: {len(ye):,} eval ratings, top "
        f"{rq.K} of the pushed model's {rq.N_RETRIEVED} (earlier movies removed; a list "
        f"without the next movie is a miss); {time.monotonic() - started:.0f} s\n")
  print(f"{'order':<70}{'HR@10':>8}{'NDCG@10':>9}{'HR x':>7}{'NDCG x':>8}")
  for name, (hit_rate, ndcg) in results:
    print(f"{name:<70}{hit_rate:>8.4f}{ndcg:>9.4f}{hit_rate / base_hr:>7.3f}"
          f"{ndcg / base_ndcg:>8.3f}")
  print(f"\nlists: {h.sum():,} holdout (of {len(held):,} held-out ratings), {s.sum():,} "
        f"in-sample (of {len(s):,}) with the next movie among their {rq.N_RETRIEVED}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
