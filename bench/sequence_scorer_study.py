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
      [--max-epochs 40] [--time-cut 0.8] [--ranking sequence_length=10 ...] [--weights]
"""

import argparse
import dataclasses
import os
import tempfile
from typing import Any, Dict

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from bench import blend_weight_bound
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


@dataclasses.dataclass
class Lists:
  """The rows a study scores: each query's 100 retrieved candidates, as ranking_quality
  lists them, and what the scorer trains on."""
  config: Any
  loaded: Any  # rq.RunRows of the run
  fit: np.ndarray  # the training rows the scorer trains on
  query: tuple  # (serialized, users, items, seconds) of the scored ratings
  top: np.ndarray  # [rows, N] candidates (catalogue indices), retrieval order
  retrieval_scores: np.ndarray  # [rows, N]
  labels: np.ndarray  # [rows, N] 1 at the next movie
  protocol: str
  groups: Dict[str, np.ndarray]  # reported subsets of the rows

  @property
  def num_movies(self) -> int:
    return len(self.loaded.data.catalogue_ids)

  def eval_queries(self):
    """The scored ratings as sequence_trainer Queries over every training rating."""
    from modules import sequence_trainer  # pylint: disable=g-import-not-at-top
    loaded, known = self.loaded, np.flatnonzero(self.loaded.keep)
    return sequence_trainer.RatingLog(loaded.users[known], loaded.items[known],
                                      loaded.seconds[known], self.num_movies).queries(
                                          *self.query[1:])


def load_lists(data_dir, time_cut: float) -> Lists:
  """The bench run's lists on split `last`, or (time_cut) on the time cut, retrieval
  retrained on the ratings before it."""
  from components import examples_io  # pylint: disable=g-import-not-at-top
  from modules import features as F  # pylint: disable=g-import-not-at-top
  from modules import retrieval_export, retrieval_model  # pylint: disable=g-import-not-at-top
  from tfx.utils import path_utils  # pylint: disable=g-import-not-at-top

  config, run = pipeline_run.run(data_dir)
  loaded = rq.RunRows.load(run)
  data = loaded.data
  with tempfile.TemporaryDirectory() as variant_dir:
    if time_cut:
      cut, fit, after = loaded.time_cut(time_cut)
      pipeline_run.train_retrieval(run, {}, variant_dir, keep=lambda ids: ids[
          retrieval_model.QUERY_SECONDS_FEATURE] < cut)
      pair = retrieval_export.RetrievalModelPair(variant_dir)
      serialized = examples_io.read_serialized(loaded.examples, F.TRAIN_SPLIT)
      query = ([serialized[r] for r in after], loaded.users[after], loaded.items[after],
               loaded.seconds[after])
      protocol = (f"time cut at quantile {time_cut} ({cut}): {len(fit):,} ratings "
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
  return Lists(config, loaded, fit, query, top, retrieval_scores, labels, protocol, groups)


def by_score(scores: np.ndarray) -> np.ndarray:
  return np.argsort(-scores, axis=1, kind="stable")


def report(lists: Lists, scores_by_epoch: Dict[int, np.ndarray], best: int,
           label: str) -> None:
  """The best epoch's scorer-alone and z-blend orders / retrieval order, with 95%
  paired-bootstrap intervals (overall and by group)."""
  from modules import sequence_scorer  # pylint: disable=g-import-not-at-top
  by_retrieval = np.broadcast_to(np.arange(rq.N_RETRIEVED), lists.labels.shape)
  scores = scores_by_epoch[best]
  for name, ordered in (("alone", scores),
                        ("z-blend", sequence_scorer.blend(scores, lists.retrieval_scores))):
    for metric, new, old in zip(("HR@10", "NDCG@10"),
                                rq.row_rates(by_score(ordered), lists.labels),
                                rq.row_rates(by_retrieval, lists.labels)):
      print(f"  {label}epoch {best}, {name} / retrieval order, {metric}: "
            f"{rq.ratio_cell(new, old)} (95% paired bootstrap)" + "".join(
                f"; {group} ({int(rows.sum()):,}) {rq.ratio_cell(new[rows], old[rows])}"
                for group, rows in lists.groups.items()))


def epoch_line(lists: Lists, epoch: int, scores: np.ndarray, base) -> str:
  """An epoch's scorer-alone and z-blend HR@10 / NDCG@10 (× retrieval order)."""
  from modules import sequence_scorer  # pylint: disable=g-import-not-at-top
  cells = [rq.top_k_rates(by_score(scores), lists.labels),
           rq.top_k_rates(by_score(sequence_scorer.blend(scores, lists.retrieval_scores)),
                          lists.labels)]
  return f"{epoch:>5}" + "".join(
      f"{hr:>8.4f}{ndcg:>8.4f} ({hr / base[0]:.3f}/{ndcg / base[1]:.3f})" for hr, ndcg in cells)


def retrieval_order_rates(lists: Lists):
  return rq.top_k_rates(np.broadcast_to(np.arange(rq.N_RETRIEVED), lists.labels.shape),
                        lists.labels)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data-dir")
  parser.add_argument("--max-epochs", type=int, help="default: RankingHParams'")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
  parser.add_argument("--ranking", action="append", metavar="NAME=VALUE",
                      help="a RankingHParams override for the scorer (an ablation), "
                      "e.g. sequence_length=10; repeatable")
  parser.add_argument("--weights", action="store_true",
                      help="also print the chosen epoch's blend at other scorer weights "
                      "(bench/blend_weight_bound.py; an optimistic bound on these rows)")
  parser.add_argument("--time-cut", type=float, default=0.0,
                      help="the live-system protocol instead: retrieval and the scorer "
                      "trained on the ratings before the time at this quantile of the "
                      "training ratings' times, scored on every later rating")
  args = parser.parse_args(argv)
  lists = load_lists(args.data_dir, args.time_cut)
  from modules import sequence_trainer  # pylint: disable=g-import-not-at-top
  from modules.hparams import RankingHParams  # pylint: disable=g-import-not-at-top
  from movrec import paths  # pylint: disable=g-import-not-at-top
  eval_queries = lists.eval_queries()
  base = retrieval_order_rates(lists)
  print(f"{lists.config.data_dir}, {lists.protocol}; retrieval order HR@10 {base[0]:.4f}, "
        f"NDCG@10 {base[1]:.4f}\n")
  loaded = lists.loaded
  for seed in args.seeds:
    hparams = RankingHParams.from_dict({**paths.key_values(args.ranking, "--ranking"),
                                        "seed": seed})
    if args.max_epochs:
      hparams = dataclasses.replace(hparams, sequence_max_epochs=args.max_epochs)
    print(f"seed {seed}" + "".join(f", {pair}" for pair in args.ranking or []))
    print(f"{'epoch':>5}" + "".join(f"{name:>28}" for name in ("alone", "z-blend")))
    scores_by_epoch = {}

    def after_epoch(epoch, scorer, hparams=hparams, scores_by_epoch=scores_by_epoch):
      scores = list_scores(scorer, eval_queries, lists.top, hparams.sequence_length)
      scores_by_epoch[epoch] = scores
      print(epoch_line(lists, epoch, scores, base), flush=True)

    _, summary = sequence_trainer.train(
        loaded.users[lists.fit], loaded.items[lists.fit], loaded.seconds[lists.fit],
        lists.num_movies, hparams, progress=lambda line: print(f"  {line}"),
        on_epoch=after_epoch)
    best = summary["best_epoch"]
    print(f"seed {seed}: {summary['train_seconds']:.0f} s for {summary['epochs_run']} "
          f"epochs; the best validation NDCG@10 at epoch {best}")
    report(lists, scores_by_epoch, best, "")
    if args.weights:
      print()
      scores = scores_by_epoch[best]
      blend_weight_bound.sweep(lists.retrieval_scores, scores, np.ones(scores.shape, bool),
                               lists.labels.astype(bool),
                               f"seed {seed}, epoch {best}, {lists.protocol}")
  return 0


if __name__ == "__main__":
  pipeline_run.exit_skipping_finalization(main())
