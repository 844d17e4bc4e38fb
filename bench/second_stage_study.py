"""What else a second stage was tried with (issue 12), on bench/ranking_quality.py's rows.

Same run, eval rows and top-100 lists of the pushed retrieval model as
bench/ranking_quality.py (ml-100k, split `last`: each user's latest rating, the query
sees only earlier ratings, movies rated by then removed, a list without the next movie is
a miss). Every variant re-orders the pushed model's 100 candidates and is compared with
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
  cross-fitted lists   (--crossfit K, instead of the above) every training rating's list
                       from one of K retrieval models, each trained without one fold of
                       the ratings (a hash of the rating's second) and scoring that
                       fold, so every list is out of
                       sample; the re-rankers are also scored on 10% of these lists held
                       out, and on the eval lists of a model trained the fold models' way
                       (from examples) on every rating; "weighted": each list's loss
                       weighted so that history lengths are distributed as at the users'
                       next ratings (after every training rating)

  time cut             (--time-cut Q, instead of the above) what a live system sees: a
                       retrieval model trained only on the ratings before the time T
                       at quantile Q of the training ratings' times, scored on every
                       later training rating with an earlier one (the query's history
                       is the user's ratings before it, as served); the re-rankers are
                       fitted on that model's lists of the ratings before T. Rows of
                       users who rated before T and of users new after T apart.

  .venv/bin/python -m bench.second_stage_study [--data-dir DIR] [--holdout 5]
      [--crossfit 5 | --time-cut 0.8]
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


def retrieval_order_scores(labels):
  """Scores [n, N] that sort each retrieved list (labels' shape) in its retrieval order."""
  return -np.broadcast_to(np.arange(rq.N_RETRIEVED), labels.shape).astype(np.float32)


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


def fold_of(seconds, folds: int):
  """The cross-fitting fold of a rating made at `seconds` (numpy array or tensor, int64):
  a multiplicative hash of the second, so ratings made in one second share a fold."""
  return (seconds * 2654435761) // 4096 % folds


def learned_ranker_scores(data, train, rows, evaluated, epochs=4, seed=0):
  """The learned ranker trained on the lists `train` (rows: a boolean mask), one epoch at
  a time; after each, its scores for each list set in `evaluated`: [epoch][set] [n, K]."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(seed)
  flat = train["x_extra"][rows][:5000].reshape(-1, train["x_extra"].shape[-1])
  model = learned_ranker(len(data.user_ids), len(data.catalogue_ids), flat.shape[-1],
                         flat.mean(0), flat.std(0) + 1e-6)
  model.compile(tf.keras.optimizers.Adam(1e-3),
                loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True))
  pad = len(data.catalogue_ids)
  inputs = lambda lst, rows: [lst["users"][rows].astype(np.int32),
                              newest([lst["histories"][i] for i in np.flatnonzero(rows)],
                                     LEARNED_HISTORY, pad),
                              lst["top"][rows].astype(np.int32), lst["x_extra"][rows]]
  train_inputs = inputs(train, rows)
  evaluated = [inputs(lst, np.ones(len(lst["y"]), bool)) for lst in evaluated]
  scores = []
  for _ in range(epochs):
    model.fit(train_inputs, train["y"][rows], batch_size=128, epochs=1, verbose=0)
    scores.append([model.predict(e, batch_size=256, verbose=0) for e in evaluated])
  return scores


def crossfit_lists(run, lists, rows, seconds, folds):
  """Lists (see main's `lists`) of the training `rows`, each from a retrieval model that
  left the row's fold out of training, in the order of `rows`."""
  from modules import retrieval_export, retrieval_model  # pylint: disable=g-import-not-at-top
  fold = fold_of(seconds[rows], folds)
  parts, order = [], []
  for k in range(folds):
    keep = lambda ids, k=k: fold_of(ids[retrieval_model.QUERY_SECONDS_FEATURE], folds) != k
    with tempfile.TemporaryDirectory() as variant_dir:
      pipeline_run.train_retrieval(run, {}, variant_dir, keep=keep)
      parts.append(lists(retrieval_export.RetrievalModelPair(variant_dir), rows[fold == k]))
    order.append(np.flatnonzero(fold == k))
  back = np.argsort(np.concatenate(order), kind="stable")
  merged = {}
  for key in parts[0]:
    values = [v for part in parts for v in (part[key] if key == "histories"
                                            else [part[key]])]
    merged[key] = ([values[i] for i in back] if key == "histories"
                   else np.concatenate(values)[back])
  return merged


def positions_from_newest(users, times):
  """Each row's place among its user's rows, newest first (0: the user's newest)."""
  users = np.asarray(users)
  order = np.lexsort((-np.asarray(times), users))
  first = np.r_[True, users[order][1:] != users[order][:-1]]
  starts = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
  position = np.empty(len(order), np.int64)
  position[order] = np.arange(len(order)) - starts
  return position


def subset(lst, rows):
  """The lists `rows` (a boolean mask) of a main()-style `lists` dict."""
  return {key: ([v for v, r in zip(value, rows) if r] if key == "histories" else value[rows])
          for key, value in lst.items()}


HISTORY_BINS = (0, 20, 40, 80, 160, 320)  # earlier ratings of the user, bin lower edges


def history_length_weights(lengths, served):
  """[n] weights that give lists with histories of `lengths` the distribution of history
  lengths `served` (log-spaced bins), mean 1."""
  edges = np.r_[0, np.geomspace(10, 1000, 12), np.inf]
  have = np.histogram(lengths, edges)[0] / len(lengths)
  want = np.histogram(served, edges)[0] / len(served)
  weights = np.where(have > 0, want / np.maximum(have, 1e-12), 0.0)[
      np.digitize(lengths, edges) - 1]
  return weights / weights.mean()


def print_by_history_length(sets):
  """How popularity separates the next movie, by the user's number of earlier ratings
  (the training lists are mostly short histories, each user's latest rating is not)."""
  popularity = rf.FEATURES.index("popularity_all")
  edges = list(HISTORY_BINS) + [np.inf]
  print("\nseparation by popularity (popularity_all) and lists, by the user's earlier "
        "ratings:")
  print(f"{'earlier ratings':<16}" + "".join(f"{name:>28}" for name in sets))
  for low, high in zip(edges[:-1], edges[1:]):
    cells = []
    for lst in sets.values():
      length = np.array([len(items) for items, _ in lst["histories"]])
      rows = (length >= low) & (length < high)
      cells.append(f"{rq.separation(lst['x'][rows], lst['y'][rows])[popularity]:>14.2f}"
                   f"{rows.sum():>14,}" if rows.sum() >= 30 else f"{'':>14}{rows.sum():>14,}")
    print(f"{f'{low}-{high}':<16}" + "".join(cells))


def print_separations(sets):
  """How each feature (with popularity vs recent) separates the next movie from the other
  candidates, in each named list set (main()-style `lists` dicts)."""
  names = list(rf.FEATURES) + ["popularity_vs_recent_mean", "popularity_vs_recent_min"]
  separations = {name: rq.separation(lst["x_extra"], lst["y"]) for name, lst in sets.items()}
  print("\nseparation of the next movie from the other candidates "
        "((mean next - mean other) / std other):")
  print(f"{'feature':<28}" + "".join(f"{name:>28}" for name in separations))
  for i, name in enumerate(names):
    print(f"{name:<28}" + "".join(f"{v[i]:>28.2f}" for v in separations.values()))


def crossfit_study(run, lists, evals, in_sample, rows, seconds, folds, data):
  """Prints the re-rankers trained on cross-fitted lists, scored on held-out cross-fitted
  lists and on each user's latest rating, and how each feature separates the next movie."""
  from modules import retrieval_export, retrieval_model  # pylint: disable=g-import-not-at-top
  crossed = crossfit_lists(run, lists, rows, seconds, folds)
  with_next = crossed["y"].sum(1) > 0
  held_out = np.random.default_rng(0).random(len(with_next)) < 0.1
  fit, check = subset(crossed, with_next & ~held_out), subset(crossed, held_out)
  every = lambda ids: ids[retrieval_model.QUERY_SECONDS_FEATURE] >= 0
  with tempfile.TemporaryDirectory() as variant_dir:  # trained as the fold models are
    pipeline_run.train_retrieval(run, {}, variant_dir, keep=every)
    from_examples = lists(retrieval_export.RetrievalModelPair(variant_dir), None)
  sets = {"held-out cross-fitted lists": check, "latest ratings, pushed model": evals,
          "latest ratings, model from examples": from_examples}
  rates = lambda scores, y: rq.top_k_rates(np.argsort(-scores, axis=1, kind="stable"), y)
  per_set = lambda scores: [rates(sc, lst["y"]) for sc, lst in zip(scores, sets.values())]
  rows_out = [("retrieval order",
               per_set([retrieval_order_scores(lst["y"]) for lst in sets.values()]))]
  stacked = np.concatenate([lst["x_extra"] for lst in sets.values()])
  bounds = np.cumsum([0] + [len(lst["y"]) for lst in sets.values()])
  split = lambda scores: [scores[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
  for name, hidden in [("linear", ()), ("MLP 32", (32,))]:
    scores = split(rq.fit_reranker(fit["x_extra"], fit["y"], stacked, hidden=hidden,
                                   epochs=4))
    rows_out.append((f"re-ranker, {name}", per_set(scores)))
  # Each user's next rating comes after all of their training ratings: weight the lists
  # to those history lengths (known before any eval rating).
  weights = history_length_weights(
      np.array([len(items) for items, _ in fit["histories"]]),
      np.array([len(items) for items in data.user_train_items]))
  scores = split(rq.fit_reranker(fit["x_extra"], fit["y"], stacked, hidden=(32,), epochs=4,
                                 weights=weights))
  rows_out.append(("re-ranker, MLP 32, weighted", per_set(scores)))
  fit_rows = np.ones(len(fit["y"]), bool)
  for epoch, scores in enumerate(learned_ranker_scores(data, fit, fit_rows,
                                                       list(sets.values()), epochs=3), 1):
    rows_out.append((f"learned ranker, epoch {epoch}", per_set(scores)))
  newest_rows = positions_from_newest(in_sample["users"], in_sample["times"]) == 0
  newest_y = in_sample["y"][newest_rows]
  hr, ndcg = rates(retrieval_order_scores(newest_y), newest_y)
  print(f"the pushed model on each user's newest training rating (in sample): HR@10 "
        f"{hr:.4f}, NDCG@10 {ndcg:.4f}; on their latest rating {rows_out[0][1][1][0]:.4f}, "
        f"{rows_out[0][1][1][1]:.4f}")
  print(f"cross-fitted lists: {folds} folds, {len(with_next):,} training ratings, "
        f"{with_next.sum():,} with the next movie among their {rq.N_RETRIEVED}; "
        f"re-rankers fitted on {len(fit['y']):,}, checked on {len(check['y']):,}\n")
  print(f"{'order':<34}" + "".join(f"{name:>40}" for name in sets))
  print(f"{'':<34}" + "HR@10 NDCG@10 (x its retrieval order)  " * len(sets))
  base = rows_out[0][1]
  for name, figures in rows_out:
    print(f"{name:<34}" + "".join(
        f"{hr:>10.4f}{ndcg:>8.4f} ({hr / b[0]:.3f} / {ndcg / b[1]:.3f})    "
        for (hr, ndcg), b in zip(figures, base)))
  print_by_history_length({"in-sample lists": in_sample, "cross-fitted lists": crossed,
                           "latest ratings": evals})
  print_separations({"in-sample lists": in_sample, "cross-fitted lists": crossed,
                     "latest ratings": evals})


def time_cut_study(run, lists, loaded, quantile):
  """Prints the re-rankers against retrieval order on the ratings after a time cut, all
  from a retrieval model trained on the ratings before it (see the module docstring)."""
  from modules import retrieval_export, retrieval_model  # pylint: disable=g-import-not-at-top
  data, users = loaded.data, loaded.users
  cut, before, after = loaded.time_cut(quantile)
  rated_before = np.zeros(len(data.user_ids), bool)
  rated_before[users[before]] = True
  keep = lambda ids: ids[retrieval_model.QUERY_SECONDS_FEATURE] < cut
  with tempfile.TemporaryDirectory() as variant_dir:
    summary = pipeline_run.train_retrieval(run, {}, variant_dir, keep=keep)
    pair = retrieval_export.RetrievalModelPair(variant_dir)
    fit, scored = lists(pair, before), lists(pair, after)
  sets = {"every rating after T": np.ones(len(after), bool),
          "users who rated before T": rated_before[users[after]],
          "users new after T": ~rated_before[users[after]]}
  in_order = retrieval_order_scores(scored["y"])
  rates = lambda scores, r: rq.top_k_rates(np.argsort(-scores[r], axis=1, kind="stable"),
                                           scored["y"][r])
  orders = [("retrieval order", in_order)]
  with_next = fit["y"].sum(1) > 0
  newest_five = with_next & (positions_from_newest(fit["users"], fit["times"]) < 5)
  for label, fit_rows, epochs in [("every rating before T", with_next, 5),
                                  ("each user's newest 5 before T", newest_five, 10)]:
    for name, hidden in [("linear", ()), ("MLP 32", (32,))]:
      orders.append((f"re-ranker ({label}), {name}", rq.fit_reranker(
          fit["x_extra"][fit_rows], fit["y"][fit_rows], scored["x_extra"], hidden=hidden,
          epochs=epochs)))
  for epoch, (scores,) in enumerate(
      learned_ranker_scores(data, fit, with_next, [scored], epochs=3), 1):
    orders.append((f"learned ranker, epoch {epoch}", scores))
  print(f"time cut at quantile {quantile} of the training ratings' times ({cut}): retrieval "
        f"trained on {summary['train_examples']:,} ratings before it; re-rankers fitted on "
        f"{with_next.sum():,} of their lists with the next movie; scored on "
        f"{len(after):,} later ratings ({int((scored['y'].sum(1) > 0).sum()):,} with the next "
        f"movie among their {rq.N_RETRIEVED})\n")
  print(f"{'order':<52}" + "".join(f"{name:>34}" for name in sets))
  print(f"{'':<52}" + f"{'HR@10 NDCG@10 (x retrieval order)':>34}" * len(sets))
  base = [rates(in_order, r) for r in sets.values()]
  for name, scores in orders:
    cells = [(rates(scores, r), b) for r, b in zip(sets.values(), base)]
    print(f"{name:<52}" + "".join(
        f"{hr:>8.4f}{ndcg:>8.4f} ({hr / b[0]:.3f} / {ndcg / b[1]:.3f})" for (hr, ndcg), b in cells))
  print(f"{'rows':<52}" + "".join(f"{int(r.sum()):>34,}" for r in sets.values()))
  print("\nevery rating after T, x retrieval order with a 95% paired bootstrap interval:")
  by_retrieval = rq.row_rates(np.argsort(-in_order, axis=1, kind="stable"), scored["y"])
  for name, scores in orders[1:]:
    per_row = rq.row_rates(np.argsort(-scores, axis=1, kind="stable"), scored["y"])
    print(f"{name:<52}" + "".join(
        f"{metric} {rq.ratio_cell(new, old)}   "
        for metric, new, old in zip(("HR@10", "NDCG@10"), per_row, by_retrieval)))
  print_separations({"lists before T (in sample)": fit, "lists after T": scored})


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data-dir")
  parser.add_argument("--holdout", type=int, default=5)
  parser.add_argument("--crossfit", type=int, default=0,
                      help="only the cross-fitted lists, with this many folds (each fold "
                      "trains a retrieval model); 0: every other variant")
  parser.add_argument("--time-cut", type=float, default=0.0,
                      help="only the live-system protocol: a retrieval model trained "
                      "before the time at this quantile of the training ratings' times, "
                      "scored on the ratings after it; 0: every other variant")
  args = parser.parse_args(argv)
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

  if args.time_cut:
    time_cut_study(run, lists, loaded, args.time_cut)
    print(f"\n{config.data_dir}; {time.monotonic() - started:.0f} s")
    return 0
  pushed = retrieval_export.RetrievalModelPair(path_utils.serving_model_dir(
      run.output("RetrievalTrainer", "model").uri))
  evals = lists(pushed, None)
  in_sample = lists(pushed, np.flatnonzero(keep))
  if args.crossfit:
    crossfit_study(run, lists, evals, in_sample, np.flatnonzero(keep), t_seconds,
                   args.crossfit, data)
    print(f"\n{config.data_dir}, split {config.split_method}; "
          f"{time.monotonic() - started:.0f} s")
    return 0
  held = np.flatnonzero(ranking_holdout.holdout_mask(
      t_users, t_seconds, args.holdout, len(data.user_ids)) & keep)
  with tempfile.TemporaryDirectory() as variant_dir:
    pipeline_run.train_retrieval(run, {"holdout_per_user": args.holdout}, variant_dir)
    holdout = lists(retrieval_export.RetrievalModelPair(variant_dir), held)

  ye = evals["y"]
  rates = lambda scores: rq.row_rates(np.argsort(-scores, axis=1, kind="stable"), ye)
  retrieval_order = retrieval_order_scores(ye)
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

  position = positions_from_newest(in_sample["users"], in_sample["times"])
  s = with_next(in_sample)
  for newest_n, label in [(None, "every rating"), (5, "newest 5 a user")]:
    rows = s if newest_n is None else s & (position < newest_n)
    for key, extra in [("x", ""), ("x_extra", " + popularity vs recent")]:
      for name, hidden in [("linear", ()), ("MLP 32", (32,))]:
        results.append((f"in-sample lists ({label}){extra}, {name}", rates(rq.fit_reranker(
            in_sample[key][rows], in_sample["y"][rows], evals[key], hidden=hidden,
            epochs=5 if newest_n is None else 10))))

  for epoch, (scores,) in enumerate(learned_ranker_scores(data, in_sample, s, [evals]), 1):
    results.append((f"learned ranker, epoch {epoch}", rates(scores)))

  total, members = evals["scores"].copy(), ["pushed"]
  for name, overrides in ENSEMBLE.items():
    scores = ensemble_scores(run, data, evals["top"], overrides)
    results.append((f"retrieval, {name}, alone on these candidates", rates(scores)))
    total += scores
    members.append(name)
    results.append((f"retrieval ensemble: {' + '.join(members)}", rates(total)))

  base = results[0][1]
  print(f"{config.data_dir}, split {config.split_method}: {len(ye):,} eval ratings, top "
        f"{rq.K} of the pushed model's {rq.N_RETRIEVED} (movies rated by then removed; a "
        f"list without the next movie is a miss); {time.monotonic() - started:.0f} s\n")
  print(f"{'order':<70}{'HR@10':>8}{'NDCG@10':>9}{'HR x (95%)':>24}{'NDCG x (95%)':>24}")
  for name, per_row in results:  # (hits, NDCG@10) per list
    print(f"{name:<70}{per_row[0].mean():>8.4f}{per_row[1].mean():>9.4f}" + "".join(
        f"{rq.ratio_cell(new, old):>24}" for new, old in zip(per_row, base)))
  print("(95%: paired bootstrap over the eval lists of the ratio to retrieval order)")
  print(f"\nlists: {h.sum():,} holdout (of {len(held):,} held-out ratings), {s.sum():,} "
        f"in-sample (of {len(s):,}) with the next movie among their {rq.N_RETRIEVED}")
  return 0


if __name__ == "__main__":
  pipeline_run.exit_skipping_finalization(main())
