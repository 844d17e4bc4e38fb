"""Does the second stage make the top 10 better than retrieval alone? (next-item protocol)

Runs the pipeline (default configuration: split `last`) on $MOVIELENS_DATA_DIR (or
--data-dir), then runs the TwoStageEvaluator's executor (this checkout's code, not a
cached result) on the run's models and eval rows: each eval rating's 100 retrieved
movies (the query sees only earlier ratings; the movies the user had rated by then
removed), ordered as retrieved, by the sequence scorer alone and by ranking score (what
serving orders by). Prints HR@10, NDCG@10 and Recall@10 of each order on the same rows
(TFMA's figures, each eval rating a query), the ranking score's ratio to retrieval order
with its 95% paired-bootstrap interval, the same by the user's history length, the
scorer's training, and the rating model's RMSE (TFX Evaluator).

--rerankers adds session 26's study (BENCHMARKS.md, "Ranking"), the models it tried
before the sequence scorer:

  predicted rating       the same 100 ordered by the pushed ranking model (a regressor)
  re-ranker              a list-wise model (softmax over the 100) on causal context
                         features (bench/rerank_features.py) and the retrieval score and
                         rank, trained on the candidates of each user's newest training
                         ratings, which its retrieval model was not trained on
                         (RetrievalHParams.holdout_per_user): that retrieval model is
                         trained here on the run's Transform output, and the re-ranker is
                         compared with its own retrieval order.

and prints how strongly each feature separates the next movie from the other candidates
on the training lists and on the eval lists (a shift between the two is what a re-ranker
cannot learn around), and with --ablation the re-ranker without each feature.

  .venv/bin/python -m bench.ranking_quality [--data-dir DIR] [--split last|random]
      [--rerankers [--holdout 5] [--ablation]]
"""

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from bench import pipeline_run
from bench import rerank_features as rf

N_RETRIEVED, K = 100, 10


def with_movie(user_example: bytes, movie_example: bytes) -> bytes:
  """A ratings-shaped Example: the user's features and context, the movie's features."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from modules import features as F  # pylint: disable=g-import-not-at-top
  example = tf.train.Example.FromString(user_example)
  movie = tf.train.Example.FromString(movie_example).features.feature
  for name in F.MOVIE_FEATURES:
    example.features.feature[name].Clear()
    if name in movie:
      example.features.feature[name].CopyFrom(movie[name])
  return example.SerializeToString()


def row_rates(order: np.ndarray, labels: np.ndarray, k: int = K):
  """Per list: (hit [n], NDCG@k [n]) of lists whose columns `order` sorts; labels [n, N]
  1 = the next movie (a list without it counts as a miss)."""
  relevant = np.take_along_axis(labels, order, 1)[:, :k]
  return relevant.sum(1), (relevant / np.log2(np.arange(2, k + 2))).sum(1)


def top_k_rates(order: np.ndarray, labels: np.ndarray, k: int = K):
  """(HR@k, NDCG@k): row_rates averaged over the lists."""
  hits, gains = row_rates(order, labels, k)
  return float(hits.mean()), float(gains.mean())


def ratio_interval(new: np.ndarray, base: np.ndarray, draws: int = 2000, seed: int = 0):
  """95% paired-bootstrap interval of mean(new) / mean(base): the TwoStageEvaluator's
  (components/two_stage_evaluator/evaluate.py), with more draws."""
  from components.two_stage_evaluator import evaluate  # pylint: disable=g-import-not-at-top
  return tuple(evaluate.paired_ratio_interval(new, base, draws, seed))


def ratio_cell(new: np.ndarray, base: np.ndarray) -> str:
  """'1.026 (1.010-1.042)': mean(new) / mean(base) with its ratio_interval."""
  low, high = ratio_interval(new, base)
  return f"{new.mean() / base.mean():.3f} ({low:.3f}-{high:.3f})"


def retrieve(pair, data, serialized, users, items, times, n=N_RETRIEVED):
  """(candidates [n, N] catalogue indices, scores, histories, labels [n, N]) of queries."""
  candidates, _ = pair.embed_candidate_examples(data.catalogue_serialized)
  scores = pair.embed_query_examples(serialized) @ candidates.T  # causal queries
  from components.retrieval_evaluator import eval_set as eval_set_lib  # pylint: disable=g-import-not-at-top
  histories = rf.cut_histories(data.user_train_items, data.user_train_seconds, users, times)
  # Left out, as by EvalSet.rated_by_then: what the user had rated by then.
  for row, rated in enumerate(eval_set_lib.user_items_until(
      data.user_train_items, data.user_train_seconds, users, times, "right")):
    scores[row, rated[rated != items[row]]] = -np.inf
  top = np.argsort(-scores, axis=1, kind="stable")[:, :n]
  return (top, np.take_along_axis(scores, top, 1), histories,
          (top == np.asarray(items)[:, None]).astype(np.float32), candidates)


def fit_reranker(train_x, train_y, eval_x, columns=None, hidden=(), epochs=10, seed=0,
                 excluded=None, weights=None):
  """A list-wise scorer (softmax over each list) on `columns` of the features (None:
  all); `excluded` [n, N], True for candidates left out of a training list's softmax;
  `weights` [n] of the training lists' losses (None: equal); returns eval scores [n, N]."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(seed)
  columns = list(range(train_x.shape[-1])) if columns is None else columns
  x, xe = train_x[..., columns], eval_x[..., columns]
  flat = x.reshape(-1, len(columns))
  mean, std = flat.mean(0), flat.std(0) + 1e-6
  inputs, mask = tf.keras.Input((None, len(columns))), tf.keras.Input((None,))
  h = (inputs - mean) / std
  for units in hidden:
    h = tf.keras.layers.Dense(units, activation="relu")(h)
  logits = tf.squeeze(tf.keras.layers.Dense(1)(h), -1) - 1e9 * mask
  model = tf.keras.Model([inputs, mask], logits)
  model.compile(tf.keras.optimizers.Adam(3e-3),
                loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True))
  excluded = (np.zeros(train_y.shape, np.float32) if excluded is None
              else excluded.astype(np.float32))
  model.fit([x, excluded], train_y / train_y.sum(1, keepdims=True), sample_weight=weights,
            batch_size=64, epochs=epochs, verbose=0)
  return model.predict([xe, np.zeros(xe.shape[:2], np.float32)], batch_size=256, verbose=0)


@dataclasses.dataclass
class RunRows:
  """A run's ratings as the re-ranking benchmarks index them."""
  examples: Any  # the run's ratings Examples artifact (pipeline_run.tfx_artifact)
  train: Dict[str, np.ndarray]  # train split columns: user and movie id, timestamp, rating
  data: Any  # the RetrievalEvaluator's EvalSet (eval rows, catalogue, causal histories)
  keep: np.ndarray  # [train rows] True where the movie is in the catalogue
  users: np.ndarray  # [train rows] user index into data.user_ids
  items: np.ndarray  # [train rows] catalogue index (-1: not in the catalogue)
  seconds: np.ndarray  # [train rows] unix seconds

  @classmethod
  def load(cls, run) -> "RunRows":
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from components import examples_io  # pylint: disable=g-import-not-at-top
    from components.retrieval_evaluator import eval_set as eval_set_lib  # pylint: disable=g-import-not-at-top
    from modules import features as F  # pylint: disable=g-import-not-at-top
    examples = pipeline_run.tfx_artifact(run, "MovieLensExampleGen", "examples")
    train = examples_io.split_columns(examples, F.TRAIN_SPLIT, {
        F.USER_ID: tf.string, F.MOVIE_ID: tf.string, F.TIMESTAMP: tf.int64,
        F.USER_RATING: tf.float32})
    data = eval_set_lib.build(
        examples_io.read_serialized(pipeline_run.tfx_artifact(
            run, "MovieLensExampleGen", "candidates"), F.CATALOG_SPLIT),
        train, examples_io.read_serialized(examples, F.EVAL_SPLIT))
    user_index = {u: i for i, u in enumerate(data.user_ids)}
    item_index = {m: i for i, m in enumerate(data.catalogue_ids)}
    return cls(examples, train, data,
               np.array([m in item_index for m in train[F.MOVIE_ID]]),
               np.array([user_index[u] for u in train[F.USER_ID]]),
               np.array([item_index.get(m, -1) for m in train[F.MOVIE_ID]]),
               train[F.TIMESTAMP].astype(np.int64))

  def time_cut(self, quantile: float):
    """(cut: the time at `quantile` of the training ratings' times, the training rows
    before it, the rows after it whose user rated before them): the live-system protocol
    of bench/second_stage_study.py --time-cut."""
    rows = np.flatnonzero(self.keep)
    cut = int(np.quantile(self.seconds[rows], quantile))
    first = np.array([s[0] if len(s) else np.iinfo(np.int64).max
                      for s in self.data.user_train_seconds])
    return (cut, rows[self.seconds[rows] < cut],
            rows[(self.seconds[rows] >= cut) & (first[self.users[rows]] < self.seconds[rows])])


def separation(x, y):
  """Per feature: (mean over the next movies - mean over the other candidates) / std of
  the others, over lists that hold the next movie."""
  has = y.sum(1) > 0
  positive, other = x[has][y[has] > 0], x[has][y[has] == 0]
  return (positive.mean(0) - other.mean(0)) / (other.std(0) + 1e-9)


def two_stage_report(run) -> None:
  """Prints the TwoStageEvaluator's figures of this checkout's code on the run's models."""
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from components.two_stage_evaluator import evaluate  # pylint: disable=g-import-not-at-top
  from components.two_stage_evaluator import executor as two_stage  # pylint: disable=g-import-not-at-top
  from components.two_stage_evaluator import tfma_lists  # pylint: disable=g-import-not-at-top

  artifact = lambda node, key, cls: pipeline_run.tfx_artifact(run, node, key, cls)
  started = time.monotonic()
  with tempfile.TemporaryDirectory() as out:
    evaluation = standard_artifacts.ModelEvaluation()
    blessing = standard_artifacts.ModelBlessing()
    evaluation.uri, blessing.uri = os.path.join(out, "evaluation"), os.path.join(out, "b")
    two_stage.Executor().Do(
        {two_stage.RETRIEVAL_MODEL_KEY: [artifact("RetrievalTrainer", "model",
                                                  standard_artifacts.Model)],
         two_stage.RANKING_MODEL_KEY: [artifact("RankingTrainer", "model",
                                                standard_artifacts.Model)],
         two_stage.EXAMPLES_KEY: [artifact("MovieLensExampleGen", "examples",
                                           standard_artifacts.Examples)],
         two_stage.CANDIDATES_KEY: [artifact("MovieLensExampleGen", "candidates",
                                             standard_artifacts.Examples)]},
        {two_stage.EVALUATION_KEY: [evaluation], two_stage.BLESSING_KEY: [blessing]},
        {two_stage.LIST_SIZE_KEY: N_RETRIEVED})
    with open(os.path.join(evaluation.uri, two_stage.METRICS_FILE)) as f:
      report = json.load(f)
  seconds = time.monotonic() - started
  m = report["metrics"]
  available = m.get("eval_ratings_available", m["eval_ratings"])
  sampled = f" (drawn at random from {available:,})" if available > m["eval_ratings"] else ""
  print(f"{m['eval_ratings']:,} eval ratings{sampled}, each with its {m['candidates']} retrieved "
        f"movies (the movies rated by then removed; a list without the next movie is a "
        f"miss: {1 - m['candidate_recall']:.1%} of them). HR@10 and NDCG@10 by TFMA, each "
        f"eval rating a query; Recall@10 = HR@10 (one relevant movie a list).\n")
  orders = [("as retrieved (retrieval only)", evaluate.RETRIEVAL_ORDER),
            ("sequence scorer alone", evaluate.SCORER_ONLY),
            ("ranking score (served)", evaluate.TWO_STAGE)]
  print(f"{'order':<32}{'HR@10':>8}{'NDCG@10':>9}{'Recall@10':>10}   x retrieval, 95%")
  for name, order in orders:
    ratio = ""
    if order == evaluate.TWO_STAGE:
      ratio = "   " + "  ".join(
          f"{metric[:-6].upper()} {m[f'two_stage_{metric}_ratio']:.3f} "
          f"({m[f'two_stage_{metric}_ratio_low']:.3f}-{m[f'two_stage_{metric}_ratio_high']:.3f})"
          for metric in evaluate.METRICS if f"two_stage_{metric}_ratio_low" in m)
    print(f"{name:<32}{m[f'{order}_hr_at_10']:>8.4f}{m[f'{order}_ndcg_at_10']:>9.4f}"
          f"{m[f'{order}_hr_at_10']:>10.4f}{ratio}")
  print(f"\nby the movies the user had rated before (HR@10 / NDCG@10):\n"
        f"{'history':<10}{'ratings':>8}{'as retrieved':>18}{'scorer alone':>18}"
        f"{'ranking score':>18}")
  for low, bucket in tfma_lists.HISTORY_BUCKETS:
    del low
    figures = report["slices"].get(tfma_lists.slice_name(bucket))
    if figures:
      print(f"{bucket:<10}{figures['eval_ratings']:>8}" + "".join(
          f"{figures.get(f'{o}_hr_at_10', 0):>9.4f}{figures.get(f'{o}_ndcg_at_10', 0):>9.4f}"
          for _, o in orders))
  print(f"\nblessed as serving's default order: {report['blessed']} "
        f"({'; '.join(report['reasons'])}); evaluation {seconds:.0f} s")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data-dir")
  parser.add_argument("--output-dir", help="default: outputs/bench (split last), "
                      "outputs/bench-SPLIT otherwise")
  parser.add_argument("--split", help="the pipeline's split (default: its default, last)")
  parser.add_argument("--rerankers", action="store_true",
                      help="also session 26's re-rankers and the rating regressor's order")
  parser.add_argument("--holdout", type=int, default=5,
                      help="newest training ratings per user the re-ranker learns from")
  parser.add_argument("--ablation", action="store_true", help="re-ranker without each feature")
  args = parser.parse_args(argv)
  from modules import ranking_trainer  # pylint: disable=g-import-not-at-top
  from pipeline import ranking_eval_config  # pylint: disable=g-import-not-at-top

  output_dir = args.output_dir or (pipeline_run.DEFAULT_OUTPUT_DIR if args.split in (None, "last")
                                   else f"{pipeline_run.DEFAULT_OUTPUT_DIR}-{args.split}")
  config, run = pipeline_run.run(args.data_dir, output_dir,
                                 **({"split_method": args.split} if args.split else {}))
  print(f"{config.data_dir}, split {config.split_method}")
  two_stage_report(run)
  if args.rerankers:
    reranker_study(run, args)
  overall = ranking_eval_config.load_metrics(run.output("RankingEvaluator", "evaluation").uri)[""]
  ranking_uri = run.output("RankingTrainer", "model").uri
  with open(os.path.join(ranking_uri, "Format-Serving", ranking_trainer.TRAINING_FILE)) as f:
    training = json.load(f)
  scorer = training.get("sequence_scorer") or {}
  if "train_seconds" in scorer:
    print(f"\nsequence scorer: {scorer['train_queries']:,} training queries, best epoch "
          f"{scorer['best_epoch']} of {scorer['epochs_run']} (by validation on each user's "
          f"newest training rating), {scorer['train_seconds']:.0f} s")
  print(f"\nranking model (rating regressor): eval RMSE {overall[ranking_eval_config.RMSE]:.4f}, "
        f"MAE {overall[ranking_eval_config.MAE]:.4f} on {overall['example_count']:,.0f} "
        f"ratings (TFX Evaluator); training {training['train_seconds']:.1f} s, "
        f"{training['examples_per_second']:,.0f} examples/s")
  return 0


def reranker_study(run, args) -> None:
  """Session 26's re-rankers and the rating regressor's order (BENCHMARKS.md, "Ranking")."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from components import examples_io  # pylint: disable=g-import-not-at-top
  from modules import features as F  # pylint: disable=g-import-not-at-top
  from modules import ranking_holdout, ranking_trainer, retrieval_export  # pylint: disable=g-import-not-at-top
  from tfx.utils import path_utils  # pylint: disable=g-import-not-at-top
  loaded = RunRows.load(run)
  examples, train, data = loaded.examples, loaded.train, loaded.data
  rows = np.arange(len(data.eval_items))
  model_dir = lambda node: path_utils.serving_model_dir(run.output(node, "model").uri)

  # 1. The pushed models: retrieval order, and the same candidates by predicted rating.
  pair = retrieval_export.RetrievalModelPair(model_dir("RetrievalTrainer"))
  retrieved, _, _, labels, _ = retrieve(pair, data, data.eval_serialized, data.eval_users,
                                        data.eval_items, data.eval_seconds)
  rank = tf.saved_model.load(model_dir("RankingTrainer")).signatures["serving_default"]
  predicted = np.stack([rank(examples=tf.constant(
      [with_movie(data.eval_serialized[r], data.catalogue_serialized[m])
       for m in retrieved[r]]))[ranking_trainer.PREDICTIONS].numpy().reshape(-1)
                        for r in rows])
  in_order = np.broadcast_to(np.arange(N_RETRIEVED), retrieved.shape)
  results = [("pushed retrieval, retrieval order", top_k_rates(in_order, labels)),
             ("pushed retrieval, by predicted rating",
              top_k_rates(np.argsort(-predicted, axis=1, kind="stable"), labels))]

  # 2. The re-ranker, on a retrieval model that left each user's newest ratings out.
  keep, t_users, t_items, t_seconds = loaded.keep, loaded.users, loaded.items, loaded.seconds
  held = np.flatnonzero(ranking_holdout.holdout_mask(
      t_users, t_seconds, args.holdout, len(data.user_ids)) & keep)
  train_serialized = examples_io.read_serialized(examples, F.TRAIN_SPLIT)  # rows as `train`
  started = time.monotonic()
  with tempfile.TemporaryDirectory() as variant_dir:
    summary = pipeline_run.train_retrieval(run, {"holdout_per_user": args.holdout},
                                           variant_dir)
    variant = retrieval_export.RetrievalModelPair(variant_dir)
    lists = {}
    for name, (serialized, users, items, times) in {
        "train": ([train_serialized[r] for r in held], t_users[held], t_items[held],
                  t_seconds[held]),
        "eval": (data.eval_serialized, data.eval_users, data.eval_items, data.eval_seconds),
    }.items():
      top, scores, histories, y, embeddings = retrieve(variant, data, serialized, users,
                                                       items, times)
      lists[name] = (top, scores, histories, times, y)
  records = examples_io.movie_records(data.catalogue_serialized)
  catalogue = rf.Catalogue.build([r["genres"] for r in records], [r["year"] for r in records],
                                 embeddings)
  log = rf.RatingLog(t_items[keep], t_seconds[keep], train[F.USER_RATING][keep],
                     len(data.catalogue_ids))
  transitions = rf.TransitionLog(data.user_train_items, data.user_train_seconds,
                                 len(data.catalogue_ids))
  x = {name: rf.features(log, transitions, catalogue, histories, times, top, scores)
       for name, (top, scores, histories, times, _) in lists.items()}
  y = {name: value[-1] for name, value in lists.items()}
  with_next = y["train"].sum(1) > 0
  train_x, train_y = x["train"][with_next], y["train"][with_next]
  every = list(range(rf.NUM_FEATURES))
  variant_order = np.broadcast_to(np.arange(N_RETRIEVED), y["eval"].shape)
  results.append((f"holdout-{args.holdout} retrieval, retrieval order",
                  top_k_rates(variant_order, y["eval"])))
  order = lambda scores: np.argsort(-scores, axis=1, kind="stable")
  for name, hidden in [("re-ranker, linear", ()), ("re-ranker, MLP 32", (32,)),
                       ("re-ranker, MLP 64-32", (64, 32))]:
    results.append((name, top_k_rates(order(fit_reranker(
        train_x, train_y, x["eval"], every, hidden)), y["eval"])))
  seconds = time.monotonic() - started

  print(f"\nsession 26's second stages: {len(rows):,} eval ratings, top {K} of the "
        f"{N_RETRIEVED} retrieved (movies rated by then removed; a list without the next "
        "movie is a miss)\n")
  print(f"{'order':<44}{'HR@10':>9}{'NDCG@10':>9}")
  for name, (hit_rate, ndcg) in results:
    print(f"{name:<44}{hit_rate:>9.4f}{ndcg:>9.4f}")
  print(f"\nre-ranker training lists: {len(train_x):,} of {len(held):,} held-out ratings had "
        f"the next movie in their {N_RETRIEVED}; holdout retrieval model trained on "
        f"{summary['train_examples']:,} ratings in {summary['train_seconds']:.0f} s; "
        f"lists, features and re-rankers {seconds - summary['train_seconds']:.0f} s")
  print("\nseparation of the next movie from the other candidates "
        "((mean next - mean other) / std other):")
  print(f"{'feature':<24}{'train lists':>12}{'eval lists':>12}")
  for name, a, b in zip(rf.FEATURES, separation(x["train"], y["train"]),
                        separation(x["eval"], y["eval"])):
    print(f"{name:<24}{a:>12.2f}{b:>12.2f}")
  if args.ablation:
    print(f"\nre-ranker (linear) without one feature:\n{'feature':<24}{'HR@10':>9}{'NDCG@10':>9}")
    for column in every:
      hit_rate, ndcg = top_k_rates(order(fit_reranker(
          train_x, train_y, x["eval"], [c for c in every if c != column])), y["eval"])
      print(f"{rf.FEATURES[column]:<24}{hit_rate:>9.4f}{ndcg:>9.4f}")


if __name__ == "__main__":
  sys.exit(main())
