"""Ranking on ml-100k (seeds' protocol): RMSE, and whether re-ranking retrieval's top 100
helps the top 10.

For every eval user: retrieve the 100 best unseen movies (training history only, the
RetrievalEvaluator's view), then take the top 10 (a) in retrieval order and (b) by the
ranking model's predicted rating. Report, for both, HitRate@10 (a user's eval movie is
among the 10) and Recall@10, over the same users.

  .venv/bin/python -m bench.ranking_quality [--data-dir DIR]
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top

from bench import pipeline_run  # pylint: disable=g-import-not-at-top

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


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data-dir")
  parser.add_argument("--output-dir", default=pipeline_run.DEFAULT_OUTPUT_DIR)
  args = parser.parse_args(argv)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from components.retrieval_evaluator import eval_set as eval_set_lib  # pylint: disable=g-import-not-at-top
  from tfx.utils import path_utils  # pylint: disable=g-import-not-at-top
  from components.retrieval_evaluator.metrics import _mask_seen  # pylint: disable=g-import-not-at-top
  from modules import ranking_trainer, retrieval_export  # pylint: disable=g-import-not-at-top
  from pipeline import ranking_eval_config  # pylint: disable=g-import-not-at-top

  _, run = pipeline_run.run(args.data_dir, args.output_dir)
  overall = ranking_eval_config.load_metrics(run.output("RankingEvaluator", "evaluation").uri)[""]
  ranking_uri = run.output("RankingTrainer", "model").uri
  with open(os.path.join(ranking_uri, "Format-Serving", ranking_trainer.TRAINING_FILE)) as f:
    training = json.load(f)

  data = eval_set_lib.from_artifacts(
      pipeline_run.tfx_artifact(run, "MovieLensExampleGen", "examples"),
      pipeline_run.tfx_artifact(run, "MovieLensExampleGen", "candidates"))
  model_dir = lambda node: path_utils.serving_model_dir(run.output(node, "model").uri)
  pair = retrieval_export.RetrievalModelPair(model_dir("RetrievalTrainer"))
  candidates, _ = pair.embed_candidate_examples(data.catalogue_serialized)
  users = data.users_with_eval
  queries = pair.embed_query_examples([data.user_query_serialized[u] for u in users])
  scores = queries @ candidates.T
  _mask_seen(scores, users, data.seen)
  retrieved = np.argsort(-scores, axis=1)[:, :N_RETRIEVED]

  ranking_model = tf.saved_model.load(model_dir("RankingTrainer"))
  rank = ranking_model.signatures["serving_default"]
  reranked = []
  for row, user in enumerate(users):
    examples = [with_movie(data.user_query_serialized[user], data.catalogue_serialized[m])
                for m in retrieved[row]]
    predicted = rank(examples=tf.constant(examples))[ranking_trainer.PREDICTIONS].numpy()
    reranked.append(retrieved[row][np.argsort(-predicted.reshape(-1), kind="stable")])
  reranked = np.array(reranked)

  def rates(top):
    hits = [np.isin(top[r, :K], data.eval_items_by_user[u]) for r, u in enumerate(users)]
    hit_rate = np.mean([h.any() for h in hits])
    recall = np.mean([h.sum() / len(data.eval_items_by_user[u]) for h, u in zip(hits, users)])
    return hit_rate, recall

  print(f"ranking model: eval RMSE {overall[ranking_eval_config.RMSE]:.4f}, MAE "
        f"{overall[ranking_eval_config.MAE]:.4f} on {overall['example_count']:,.0f} ratings "
        f"(TFX Evaluator); training {training['train_seconds']:.1f} s, "
        f"{training['examples_per_second']:,.0f} examples/s")
  print("references: seeds' ranking 1.115 (3 epochs, measured by the issue's author), "
        "TFRS DCN tutorial ~0.933, Surprise SVD++ 0.919 (5-fold)\n")
  print(f"top-{K} of the {N_RETRIEVED} retrieved unseen movies, {len(users):,} eval users:")
  print(f"{'order':<22}{'HitRate@10':>12}{'Recall@10':>12}")
  for name, top in [("retrieval score", retrieved), ("ranking model", reranked)]:
    hit_rate, recall = rates(top)
    print(f"{name:<22}{hit_rate:>12.4f}{recall:>12.4f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
