"""ScaNN index: configuration by size, recall against exact search, loading from a copy."""
import shutil

import numpy as np
import pytest

from bundle import scann_index


def clustered(n, dim=32, clusters=50, seed=0):
  """Unit vectors around random centres: how trained embeddings look, unlike pure noise."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(clusters, dim))
  x = centres[rng.integers(clusters, size=n)] + 0.35 * rng.normal(size=(n, dim))
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_config_scales_with_the_catalogue():
  assert scann_index.IndexConfig.for_size(1_682).mode == scann_index.EXACT
  big = scann_index.IndexConfig.for_size(1_000_000)
  assert big.mode == scann_index.SCANN
  assert big.num_leaves == 1500 and big.num_leaves_to_search == 75
  assert big.reorder >= big.num_neighbors
  # Just above exact search, 5% of the leaves would be 15: the floor searches 50.
  mid = scann_index.IndexConfig.for_size(39_000)
  assert mid.num_leaves == 296 and mid.num_leaves_to_search == 50


def test_exact_mode_has_recall_one():
  embeddings, queries = clustered(2_000, seed=1), clustered(200, seed=2)
  _, info = scann_index.build_and_measure(embeddings, queries)
  assert info["config"]["mode"] == scann_index.EXACT
  assert info["recall_at_10"] == 1.0


def test_scann_mode_reaches_the_recall_threshold_on_held_out_queries():
  embeddings = clustered(60_000, seed=3)
  queries = clustered(500, seed=4)  # same distribution, not the indexed vectors
  searcher, info = scann_index.build_and_measure(embeddings, queries)
  assert info["config"]["mode"] == scann_index.SCANN
  assert info["recall_at_10"] >= 0.95
  found, _ = searcher.search_batched(queries[:5], final_num_neighbors=10)
  assert found.shape == (5, 10)


def test_a_copied_index_loads_from_its_new_place(tmp_path):
  embeddings = clustered(30_000, seed=5)
  queries = clustered(50, seed=6)
  config = scann_index.IndexConfig.for_size(len(embeddings), exact_below=1_000)
  searcher, info = scann_index.build_and_measure(embeddings, queries, config)
  candidates = [{"movie_id": str(i)} for i in range(len(embeddings))]
  scann_index.save(str(tmp_path / "built"), searcher, embeddings, candidates, info)
  shutil.copytree(tmp_path / "built", tmp_path / "pushed")
  shutil.rmtree(tmp_path / "built")  # the recorded asset paths now point nowhere
  loaded = scann_index.load(str(tmp_path / "pushed"))
  expected, _ = searcher.search_batched(queries, final_num_neighbors=10,
                                        pre_reorder_num_neighbors=config.reorder)
  found, _ = loaded.search(queries, 10)
  np.testing.assert_array_equal(found, expected)
  assert len(loaded.candidates) == len(embeddings)


def test_recall_against_exact_counts_overlap():
  assert scann_index.recall_against_exact(np.array([[1, 2, 3]]), np.array([[3, 2, 9]])) == \
      pytest.approx(2 / 3)
