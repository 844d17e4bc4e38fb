"""A second stage from the next-item literature: a SASRec-style sequence scorer (issue 12).

Sessions 26-31 (BENCHMARKS.md "Ranking") found that re-rankers fitted on candidate lists
learn a popularity pattern each user's latest rating does not follow, and that a
candidate-aware scorer trained on in-batch negatives is weaker than the two towers
alone. This benchmarks the product's second stage, the sequence scorer the RankingTrainer
trains (modules/sequence_scorer.py, modules/sequence_trainer.py; RankingHParams'
defaults): SASRec (Kang & McAuley 2018) trained with a softmax over the whole catalogue
(Klenitskiy & Vasilev 2023), the movies the user had rated by then left out. It sees no
candidate list, so it cannot learn the lists' popularity pattern. Its epoch is chosen on
each user's newest training rating, held out of its training; the eval rows are not used.

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
      [--max-epochs 40] [--time-cut 0.8] [--ranking sequence_length=10 ...]
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from bench import pipeline_run
from bench import ranking_quality as rq


def list_scores(scorer, queries, lists: np.ndarray, length: int) -> np.ndarray:
  """The scorer's scores [rows, N] of each query's list (catalogue indices)."""
  out = []
  for start in range(0, len(queries), 512):
    rows = np.arange(start, min(start + 512, len(queries)))
    query = scorer.encode(*queries.histories(rows, length))
    out.append(scorer.candidate_scores(query, lists[rows]).numpy())
  return np.concatenate(out)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data-dir")
  parser.add_argument("--max-epochs", type=int, help="default: RankingHParams'")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
  parser.add_argument("--ranking", action="append", metavar="NAME=VALUE",
                      help="a RankingHParams override for the scorer (an ablation), "
                      "e.g. sequence_length=10; repeatable")
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
  import dataclasses  # pylint: disable=g-import-not-at-top
  from modules import sequence_scorer, sequence_trainer  # pylint: disable=g-import-not-at-top
  from modules.hparams import RankingHParams  # pylint: disable=g-import-not-at-top
  from movrec import paths  # pylint: disable=g-import-not-at-top
  num_movies = len(data.catalogue_ids)
  known = np.flatnonzero(loaded.keep)  # every training rating of a catalogue movie
  eval_queries = sequence_trainer.RatingLog(
      loaded.users[known], loaded.items[known], loaded.seconds[known], num_movies).queries(
          *query[1:])
  by_score = lambda scores: np.argsort(-scores, axis=1, kind="stable")
  blend = lambda scores: sequence_scorer.blend(scores, retrieval_scores)
  by_retrieval = np.broadcast_to(np.arange(rq.N_RETRIEVED), labels.shape)
  base = rq.top_k_rates(by_retrieval, labels)
  print(f"{config.data_dir}, {protocol}; retrieval order HR@10 {base[0]:.4f}, NDCG@10 "
        f"{base[1]:.4f}\n")
  for seed in args.seeds:
    hparams = RankingHParams.from_dict({**paths.key_values(args.ranking, "--ranking"),
                                        "seed": seed})
    if args.max_epochs:
      hparams = dataclasses.replace(hparams, sequence_max_epochs=args.max_epochs)
    print(f"seed {seed}" + "".join(f", {pair}" for pair in args.ranking or []))
    print(f"{'epoch':>5}" + "".join(f"{name:>28}" for name in ("alone", "z-blend")))
    scores_by_epoch = {}

    def after_epoch(epoch, scorer, hparams=hparams, scores_by_epoch=scores_by_epoch):
      scores = list_scores(scorer, eval_queries, top, hparams.sequence_length)
      scores_by_epoch[epoch] = scores
      cells = [rq.top_k_rates(by_score(scores), labels),
               rq.top_k_rates(by_score(blend(scores)), labels)]
      print(f"{epoch:>5}" + "".join(
          f"{hr:>8.4f}{ndcg:>8.4f} ({hr / base[0]:.3f}/{ndcg / base[1]:.3f})"
          for hr, ndcg in cells), flush=True)

    _, summary = sequence_trainer.train(
        loaded.users[fit], loaded.items[fit], loaded.seconds[fit], num_movies, hparams,
        progress=lambda line: print(f"  {line}"), on_epoch=after_epoch)
    best = summary["best_epoch"]
    print(f"seed {seed}: {summary['train_seconds']:.0f} s for {summary['epochs_run']} "
          f"epochs; the best validation NDCG@10 at epoch {best}")
    for name, scores in (("alone", scores_by_epoch[best]),
                         ("z-blend", blend(scores_by_epoch[best]))):
      for metric, new, old in zip(("HR@10", "NDCG@10"), rq.row_rates(by_score(scores), labels),
                                  rq.row_rates(by_retrieval, labels)):
        print(f"  epoch {best}, {name} / retrieval order, {metric}: "
              f"{rq.ratio_cell(new, old)} (95% paired bootstrap)" + "".join(
                  f"; {group} ({int(rows.sum()):,}) {rq.ratio_cell(new[rows], old[rows])}"
                  for group, rows in groups.items()))
  return 0


if __name__ == "__main__":
  pipeline_run.exit_skipping_finalization(main())
