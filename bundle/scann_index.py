"""A ScaNN searcher over candidate embeddings: configure, build, measure, save, load.

Directory of a saved index (what the IndexBuilder writes and the Pusher copies):

  scann/            ScaNN's serialized searcher (scann_ops_pybind.serialize), including
                    dataset.npy, which reordering needs
  embeddings.npy    candidate embeddings [n, d] in index order (exact rescoring,
                    item-to-item similarity)
  candidates.jsonl  one line per candidate in index order: movie_id, title, genres, year
  index.json        configuration and measurements

ScaNN 1.3.2 records absolute asset paths in scann/scann_assets.pbtxt; `load` points them
at the directory the index is loaded from, so a copied index (the Pusher's) loads.
"""

import dataclasses
import json
import math
import os
import re
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from scann.scann_ops.py import scann_ops_pybind

SCANN_DIR = "scann"
EMBEDDINGS_FILE = "embeddings.npy"
CANDIDATES_FILE = "candidates.jsonl"
INFO_FILE = "index.json"
EXACT, SCANN = "exact", "tree_ah"

# Chosen with bench/index_scale.py --sweep at 1.68M candidates (ml-100k embeddings + the
# TFRS tutorial's scaled copies, per vector and per element; BENCHMARKS.md, "Index"): with
# 500 or fewer re-scored no tree reached recall@10 0.99; a deeper tree (1.5·√N leaves)
# searched narrowly (5%) with 1,000 re-scored reached 0.993-0.995 on both constructions
# at 122-125x a single brute-force query, where √N leaves, 30% searched had 59-71x.
DEFAULT_EXACT_BELOW = 20_000
DEFAULT_LEAVES_PER_SQRT = 1.5
DEFAULT_SEARCH_FRACTION = 0.05
# ... but never fewer leaves than this: recall is bounded by how many partitions a query
# probes, not by their share. The 10M synthetic run's real embeddings (39,000 movies, 296
# leaves) reached recall@10 0.953 with 5% (15 leaves), 0.986 with 30, 0.992 with 40-50
# and 0.995-0.997 with 59-64 (BENCHMARKS.md, "Index"); at 1.68M, 5% is 97 leaves.
DEFAULT_MIN_LEAVES_SEARCHED = 50
DEFAULT_REORDER = 1000


@dataclasses.dataclass(frozen=True)
class IndexConfig:
  """How the searcher is built; `for_size` scales it with the catalogue."""
  mode: str  # EXACT (brute force) or SCANN (tree + asymmetric hashing + reordering)
  num_neighbors: int = 100
  num_leaves: int = 0
  num_leaves_to_search: int = 0
  reorder: int = 0
  training_sample_size: int = 0

  @classmethod
  def for_size(cls, n: int, exact_below: int = DEFAULT_EXACT_BELOW,
               search_fraction: float = DEFAULT_SEARCH_FRACTION,
               reorder: int = DEFAULT_REORDER, num_neighbors: int = 100,
               leaves_per_sqrt: float = DEFAULT_LEAVES_PER_SQRT,
               min_leaves_searched: int = DEFAULT_MIN_LEAVES_SEARCHED) -> "IndexConfig":
    """Brute force for small catalogues (it is exact and already fast); above, a tree
    with `leaves_per_sqrt`·√n leaves searching `search_fraction` of them (at least
    `min_leaves_searched`), AH scoring and reordering."""
    if n < exact_below:
      return cls(EXACT, num_neighbors=num_neighbors)
    leaves = max(2, int(round(leaves_per_sqrt * math.sqrt(n))))
    searched = max(1, int(round(leaves * search_fraction)), min_leaves_searched)
    return cls(SCANN, num_neighbors=num_neighbors, num_leaves=leaves,
               num_leaves_to_search=min(leaves, searched),
               reorder=max(reorder, num_neighbors),
               training_sample_size=min(n, 250_000))


def build(embeddings: np.ndarray, config: IndexConfig):
  """A ScaNN searcher (dot-product similarity) over `embeddings`."""
  embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
  builder = scann_ops_pybind.builder(embeddings, config.num_neighbors, "dot_product")
  if config.mode == EXACT:
    return builder.score_brute_force().build()
  return (builder.tree(num_leaves=config.num_leaves,
                       num_leaves_to_search=config.num_leaves_to_search,
                       training_sample_size=config.training_sample_size)
          .score_ah(2, anisotropic_quantization_threshold=0.2)
          .reorder(config.reorder).build())


def exact_top_k(queries: np.ndarray, embeddings: np.ndarray, k: int) -> np.ndarray:
  """Brute-force top-k indices (numpy), the reference for recall."""
  chunk = max(1, min(256, int(5e7 // max(len(embeddings), 1))))  # ≤ 200 MB of scores
  out = []
  for start in range(0, len(queries), chunk):
    scores = queries[start:start + chunk] @ embeddings.T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    out.append(np.take_along_axis(top, order, axis=1))
  return np.concatenate(out)


def recall_against_exact(found: np.ndarray, exact: np.ndarray) -> float:
  """Mean share of the exact top-k found by the searcher."""
  k = exact.shape[1]
  return float(np.mean([len(set(f[:k]) & set(e)) / k for f, e in zip(found, exact)]))


def measure(searcher, embeddings: np.ndarray, queries: np.ndarray, k: int = 10) -> Dict:
  """Recall@k against exact search and speed, on `queries` (never the indexed vectors)."""
  started = time.perf_counter()
  exact = exact_top_k(queries, embeddings, k)
  exact_seconds = time.perf_counter() - started
  started = time.perf_counter()
  found, _ = searcher.search_batched(queries, final_num_neighbors=k)
  batched_seconds = time.perf_counter() - started
  single = queries[:min(len(queries), 200)]
  started = time.perf_counter()
  for q in single:
    searcher.search(q, final_num_neighbors=k)
  single_seconds = time.perf_counter() - started
  return {
      f"recall_at_{k}": recall_against_exact(np.asarray(found), exact),
      "queries": int(len(queries)),
      "queries_per_second": len(queries) / batched_seconds,
      "brute_force_queries_per_second": len(queries) / exact_seconds,
      "speedup_vs_brute_force": exact_seconds / batched_seconds,
      "single_query_ms": 1000 * single_seconds / max(len(single), 1),
  }


def save(path: str, searcher, embeddings: np.ndarray, candidates: Sequence[Dict],
         info: Dict) -> None:
  os.makedirs(os.path.join(path, SCANN_DIR), exist_ok=True)
  searcher.serialize(os.path.join(path, SCANN_DIR))
  np.save(os.path.join(path, EMBEDDINGS_FILE), embeddings.astype(np.float32))
  with open(os.path.join(path, CANDIDATES_FILE), "w") as f:
    for candidate in candidates:
      f.write(json.dumps(candidate) + "\n")
  with open(os.path.join(path, INFO_FILE), "w") as f:
    json.dump(info, f, indent=2)


_ASSET_PATH = re.compile(r'asset_path: "([^"]*)"')


def load_searcher(path: str):
  """The searcher saved under `path`, wherever it was serialized."""
  scann_dir = os.path.abspath(os.path.join(path, SCANN_DIR))
  with open(os.path.join(scann_dir, "scann_assets.pbtxt")) as f:
    assets = _ASSET_PATH.sub(
        lambda m: 'asset_path: "%s"' % os.path.join(scann_dir, os.path.basename(m.group(1))),
        f.read())
  return scann_ops_pybind.ScannSearcher(
      scann_ops_pybind.scann_pybind.ScannNumpy(scann_dir, assets), None)


@dataclasses.dataclass
class LoadedIndex:
  searcher: object
  embeddings: np.ndarray
  candidates: List[Dict]
  info: Dict

  def search(self, queries: np.ndarray, k: int):
    """(indices [q, k], scores [q, k]) of the best candidates for each query."""
    queries = np.atleast_2d(queries).astype(np.float32)
    if self.info["config"]["mode"] == EXACT:
      return self.searcher.search_batched(queries, final_num_neighbors=k)
    reorder = max(k, self.info["config"]["reorder"])  # re-score at least k candidates
    return self.searcher.search_batched(queries, final_num_neighbors=k,
                                        pre_reorder_num_neighbors=reorder)


def load(path: str) -> LoadedIndex:
  with open(os.path.join(path, CANDIDATES_FILE)) as f:
    candidates = [json.loads(line) for line in f]
  with open(os.path.join(path, INFO_FILE)) as f:
    info = json.load(f)
  return LoadedIndex(load_searcher(path), np.load(os.path.join(path, EMBEDDINGS_FILE)),
                     candidates, info)


def build_and_measure(embeddings: np.ndarray, queries: np.ndarray,
                      config: Optional[IndexConfig] = None) -> tuple:
  """(searcher, info) where info holds the configuration, build seconds and measurements."""
  config = config or IndexConfig.for_size(len(embeddings))
  started = time.perf_counter()
  searcher = build(embeddings, config)
  build_seconds = time.perf_counter() - started
  info = {"config": dataclasses.asdict(config), "num_candidates": int(len(embeddings)),
          "dimension": int(embeddings.shape[1]), "build_seconds": build_seconds,
          **measure(searcher, embeddings, queries)}
  return searcher, info
