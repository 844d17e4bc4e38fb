"""Where a recommend request's time goes: each stage of the two-stage path timed on its own,
by the graph (what every request ran before session 34, and what a request that overrides
the user's features or time still runs) and by what a known user's default request runs now.

  .venv/bin/python -m bench.serving_stages [--serving-dir DIR] [--calls 500]

Random known users, ranking order, 100 candidates, top 10 rated; p50/p99 over --calls
calls after 100 warm-up calls. The scorer and rating model's SavedModels are loaded here
beside the bundle's TensorFlow Lite files, so both paths run on the same bundle.
"""

import argparse
import os
import random
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from bench import pipeline_run

_WARM_UP = 100


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--serving-dir", default=pipeline_run.DEFAULT_SERVING_DIR)
  parser.add_argument("--calls", type=int, default=500)
  args = parser.parse_args(argv)

  from bundle import layout  # pylint: disable=g-import-not-at-top
  from modules import sequence_scorer  # pylint: disable=g-import-not-at-top
  from serving.recommender import Recommender  # pylint: disable=g-import-not-at-top
  from serving.retriever import latest_bundle_path  # pylint: disable=g-import-not-at-top
  rec = Recommender(latest_bundle_path(args.serving_dir))
  retriever = rec.retriever
  graph_scorer = sequence_scorer.LoadedScorer(os.path.join(
      rec.path, layout.RANKING_MODEL_DIR, sequence_scorer.EXPORT_DIR))
  users, rng, timings = sorted(retriever.users), random.Random(0), {}

  def timed(stage, call):
    started = time.perf_counter()
    out = call()
    timings.setdefault(stage, []).append(1000 * (time.perf_counter() - started))
    return out

  def request(user):
    history, rated_at = retriever.rated_before(user)
    found = retriever.search(retriever.embed(user), 100, set(history))
    return history, rated_at, retriever.query_time(user), [r.movie_id for r in found]

  def graph(user):
    history, rated_at, now, ids = request(user)
    inputs = timed("graph: query inputs", lambda: retriever.query_inputs(user))
    query = timed("graph: query embedding", lambda: retriever.embed_inputs(inputs))
    timed("graph: ScaNN search", lambda: retriever.search(query, 100, set(history)))
    timed("graph: sequence scorer (SavedModel)",
          lambda: graph_scorer.score(history, rated_at, now, ids))
    timed("graph: ratings of 10", lambda: rec._score(ids[:10], inputs))  # pylint: disable=protected-access
    timed("graph: whole recommend by ranking score (timestamp given)",
          lambda: rec.recommend(user, order_by="ranking_score", timestamp=now))

  def now_path(user):
    history, rated_at, now, ids = request(user)
    query = timed("now: query embedding (computed at load)", lambda: retriever.embed(user))
    timed("now: ScaNN search", lambda: retriever.search(query, 100, set(history)))
    timed("now: sequence scorer (TensorFlow Lite)",
          lambda: rec._sequence.score(history, rated_at, now, ids))  # pylint: disable=protected-access
    rows = [retriever.position[m] for m in ids[:10]]
    timed("now: ratings of 10 (TensorFlow Lite)",
          lambda: rec._lite_ratings.predict(user, rows))  # pylint: disable=protected-access
    timed("now: whole recommend by ranking score",
          lambda: rec.recommend(user, order_by="ranking_score"))

  # One path at a time: TensorFlow's threads spin a while after a graph call, which slowed
  # the TensorFlow Lite calls interleaved with them 3-4x on 2 cores.
  for path in (graph, now_path):
    for _ in range(_WARM_UP + args.calls):
      path(rng.choice(users))
  print(f"bundle {rec.version}, {args.calls} calls after {_WARM_UP} warm-up, {os.cpu_count()} cores")
  for stage, values in timings.items():
    values = values[_WARM_UP:]
    print(f"  {stage:58s} p50 {np.percentile(values, 50):6.2f} ms  "
          f"p99 {np.percentile(values, 99):6.2f} ms")
  return 0


if __name__ == "__main__":
  pipeline_run.exit_skipping_finalization(main())
