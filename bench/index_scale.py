"""ScaNN at scale, as in the TFRS efficient-serving tutorial: ~1.68M candidates.

Takes the real movie embeddings of a pushed bundle (run bench.retrieval_quality or
`movrec run` first), adds `--copies` randomly scaled copies of each (1,682 × 1,001 ≈ 1.68M
for ml-100k) by both of the tutorial's constructions (one factor per vector, one per
element), and measures on real user query embeddings, in one process: recall@10 of a ScaNN
tree-AH index against exact search, and one query at a time against numpy brute force
(matmul + partial sort). Without `--sweep` it measures the configuration the IndexBuilder
would choose for that size; with it, every configuration in SWEEP. Prints a markdown table.

  .venv/bin/python -m bench.index_scale [--serving-dir DIR] [--copies 1000] [--sweep]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from bench import pipeline_run

from bundle import scann_index


CONSTRUCTIONS = ("per-vector", "per-element")
# (leaves per √N, share of leaves searched, candidates re-scored) tried by --sweep: a
# first pass over 1-2 √N leaves, 3-20 % searched and 250-500 re-scored found recall@10
# below 0.99 everywhere (re-scoring bound it), so this grid re-scores more.
SWEEP = [(lps, frac, reorder) for lps in (1.5, 2.0)
         for frac in (0.03, 0.05) for reorder in (1000, 2000)]


def scaled_copies(movies: np.ndarray, copies: int, construction: str,
                  rng: np.random.Generator) -> np.ndarray:
  """The real embeddings plus `copies` random rescalings of each, as in the TFRS
  efficient-serving tutorial: one factor per vector ("per-vector") or one per element
  ("per-element", `embedding * tf.random.uniform(tf.shape(embedding))`)."""
  shape = (copies, len(movies), 1 if construction == "per-vector" else movies.shape[1])
  scales = rng.uniform(0.0, 1.0, size=shape).astype(np.float32)
  return np.concatenate([movies[None], movies[None] * scales]).reshape(-1, movies.shape[1])


def brute_force_single_ms(candidates: np.ndarray, queries: np.ndarray) -> float:
  """One query at a time, numpy matmul + partial sort: the baseline speed-ups are against."""
  started = time.perf_counter()
  for q in queries:
    scores = candidates @ q
    np.argpartition(-scores, 9)[:10]
  return 1000 * (time.perf_counter() - started) / len(queries)


def run_config(candidates, queries, exact, brute_ms, config) -> dict:
  started = time.perf_counter()
  searcher = scann_index.build(candidates, config)
  build_seconds = time.perf_counter() - started
  found, _ = searcher.search_batched(queries, final_num_neighbors=10)
  single = queries[:200]
  started = time.perf_counter()
  for q in single:
    searcher.search(q, final_num_neighbors=10)
  single_ms = 1000 * (time.perf_counter() - started) / len(single)
  return {"recall": scann_index.recall_against_exact(np.asarray(found), exact),
          "single_ms": single_ms, "speedup": brute_ms / single_ms, "build": build_seconds}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--serving-dir", default=pipeline_run.DEFAULT_SERVING_DIR)
  parser.add_argument("--copies", type=int, default=1000)
  parser.add_argument("--queries", type=int, default=1000)
  parser.add_argument("--construction", choices=CONSTRUCTIONS + ("both",), default="both")
  parser.add_argument("--leaves-per-sqrt", type=float,
                      default=scann_index.DEFAULT_LEAVES_PER_SQRT)
  parser.add_argument("--search-fraction", type=float,
                      default=scann_index.DEFAULT_SEARCH_FRACTION)
  parser.add_argument("--reorder", type=int, default=scann_index.DEFAULT_REORDER)
  parser.add_argument("--min-leaves-searched", type=int,
                      default=scann_index.DEFAULT_MIN_LEAVES_SEARCHED)
  parser.add_argument("--sweep", action="store_true",
                      help="try every configuration in SWEEP instead of the one given")
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
  settings = SWEEP if args.sweep else [(args.leaves_per_sqrt, args.search_fraction,
                                        args.reorder)]
  constructions = CONSTRUCTIONS if args.construction == "both" else (args.construction,)

  print(f"bundle {retriever.version}: {len(movies):,} movie embeddings (dim "
        f"{movies.shape[1]}) + {args.copies:,} scaled copies each; {len(queries):,} real "
        "user queries; speed-up = brute force one query at a time / ScaNN one query at a "
        "time\n")
  print("| construction | leaves | searched | re-scored | recall@10 | ScaNN ms/query "
        "| speed-up | build s |")
  print("|---|---|---|---|---|---|---|---|")
  for construction in constructions:
    candidates = scaled_copies(movies, args.copies, construction, rng)
    exact = scann_index.exact_top_k(queries, candidates, 10)
    brute_ms = brute_force_single_ms(candidates, queries[:100])
    for leaves_per_sqrt, fraction, reorder in settings:
      config = scann_index.IndexConfig.for_size(
          len(candidates), search_fraction=fraction, reorder=reorder, num_neighbors=10,
          leaves_per_sqrt=leaves_per_sqrt, min_leaves_searched=args.min_leaves_searched)
      r = run_config(candidates, queries, exact, brute_ms, config)
      print(f"| {construction} ({len(candidates):,}; brute force {brute_ms:.1f} ms) "
            f"| {config.num_leaves:,} | {config.num_leaves_to_search:,} | {config.reorder:,} "
            f"| {r['recall']:.4f} | {r['single_ms']:.3f} | {r['speedup']:.0f}x "
            f"| {r['build']:.1f} |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
