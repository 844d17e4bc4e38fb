"""ScaNN at scale, as in the TFRS efficient-serving tutorial: ~1.68M candidates.

Takes the real movie embeddings of a pushed bundle (run bench.retrieval_quality or
`movrec run` first), adds `--copies` randomly scaled copies of each (1,682 × 1,001 ≈ 1.68M
for ml-100k), and measures, on real user query embeddings and in the same process:
exact brute force (numpy matmul + partial sort) against the ScaNN index the IndexBuilder
would configure for that size: recall@10, queries per second, build time and memory.

  .venv/bin/python -m bench.index_scale [--serving-dir DIR] [--copies 1000]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from bench import pipeline_run

from bundle import scann_index


def rss_mb() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--serving-dir", default=pipeline_run.DEFAULT_SERVING_DIR)
  parser.add_argument("--copies", type=int, default=1000)
  parser.add_argument("--queries", type=int, default=1000)
  parser.add_argument("--search-fraction", type=float,
                      default=scann_index.DEFAULT_SEARCH_FRACTION)
  parser.add_argument("--reorder", type=int, default=scann_index.DEFAULT_REORDER)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)

  from serving.retriever import load_latest_bundle  # pylint: disable=g-import-not-at-top
  retriever = load_latest_bundle(args.serving_dir)
  movies = retriever.index.embeddings
  rng = np.random.default_rng(args.seed)
  users = sorted(retriever.users)
  users = [users[i] for i in rng.choice(len(users), min(args.queries, len(users)), replace=False)]
  queries = np.stack([retriever.embed_inputs(retriever.query_inputs(u))
                      for u in users]).astype(np.float32)

  scales = rng.uniform(0.0, 1.0, size=(args.copies, len(movies), 1)).astype(np.float32)
  candidates = np.concatenate([movies[None], movies[None] * scales]).reshape(-1, movies.shape[1])
  print(f"bundle {retriever.version}: {len(movies):,} movie embeddings (dim {movies.shape[1]}) "
        f"+ {args.copies:,} scaled copies each = {len(candidates):,} candidates; "
        f"{len(queries):,} real user queries\n")

  config = scann_index.IndexConfig.for_size(len(candidates),
                                            search_fraction=args.search_fraction,
                                            reorder=args.reorder, num_neighbors=10)
  before = rss_mb()
  started = time.perf_counter()
  searcher = scann_index.build(candidates, config)
  build_seconds = time.perf_counter() - started
  index_mb = rss_mb() - before
  m = scann_index.measure(searcher, candidates, queries, k=10)

  brute_single = queries[:100]
  started = time.perf_counter()
  for q in brute_single:
    scores = candidates @ q
    np.argpartition(-scores, 9)[:10]
  brute_single_ms = 1000 * (time.perf_counter() - started) / len(brute_single)

  print(f"ScaNN config     {config}")
  print(f"build            {build_seconds:.1f} s, +{index_mb:,.0f} MB resident "
        f"(candidates themselves: {candidates.nbytes / 2**20:,.0f} MB)")
  print(f"recall@10        {m['recall_at_10']:.4f} against exact search (same queries)")
  print(f"batched          ScaNN {m['queries_per_second']:,.0f} q/s vs brute force "
        f"{m['brute_force_queries_per_second']:,.0f} q/s: {m['speedup_vs_brute_force']:.1f}x")
  print(f"single query     ScaNN {m['single_query_ms']:.3f} ms vs brute force "
        f"{brute_single_ms:.3f} ms: {brute_single_ms / m['single_query_ms']:.1f}x")
  return 0


if __name__ == "__main__":
  sys.exit(main())
