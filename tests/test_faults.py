"""The fault matrix: each fault made real (processes killed, files truncated, writes that
fail) against real components, and what must happen.

Bundles (written by the BundlePusher's own code from a real run's artifacts): verified
before use, the newest valid one served, failed versions remembered, pinning, pushes that
fail midway or were killed. A run killed during a Trainer: test_killed_run.py.
"""
import errno
import json
import os

import pytest

from components.bundle_pusher import executor as pusher
from bundle import scann_index
from bundle import layout as bundle_layout
from pipeline.config import direct_runner_args
from serving.recommender import LiveRecommender
from serving.retriever import BundleNotFoundError


@pytest.fixture(scope="module")
def artifacts(pushed_artifacts):
  return pushed_artifacts


def push(serving_dir, artifacts) -> int:
  """A new version written by the BundlePusher's code; returns its number."""
  path = pusher.write_bundle(str(serving_dir), artifacts["model"], artifacts["index"],
                             artifacts["examples"], artifacts["ranking"])
  return int(os.path.basename(path))


def corrupt(serving_dir, version, relative, how):
  path = os.path.join(bundle_layout.version_dir(str(serving_dir), version), relative)
  with open(path, "rb") as f:
    content = f.read()
  with open(path, "wb") as f:
    if how == "truncate":
      f.write(content[:len(content) // 2])
    else:  # flip one byte, same size
      f.write(content[:-1] + bytes([content[-1] ^ 1]))
  return path


USERS = bundle_layout.USERS_FILE
CANDIDATES = os.path.join(bundle_layout.INDEX_DIR, scann_index.CANDIDATES_FILE)


def test_a_pushed_manifest_lists_every_file_and_verify_names_a_bad_one(tmp_path, artifacts):
  serving = tmp_path / "bundles"
  version = push(serving, artifacts)
  path = bundle_layout.version_dir(str(serving), version)
  manifest = bundle_layout.verify(path)
  on_disk = sorted(os.path.relpath(os.path.join(d, f), path)
                   for d, _, files in os.walk(path) for f in files)
  assert sorted(manifest["files"]) == sorted(set(on_disk) - {bundle_layout.MANIFEST_FILE})
  bad = corrupt(serving, version, CANDIDATES, "truncate")
  with pytest.raises(bundle_layout.InvalidBundleError, match="bytes, the manifest says") as e:
    bundle_layout.verify(path)
  assert bad in str(e.value)
  version2 = push(serving, artifacts)
  corrupt(serving, version2, USERS, "flip")
  with pytest.raises(bundle_layout.InvalidBundleError, match="SHA-256"):
    bundle_layout.verify(bundle_layout.version_dir(str(serving), version2))


def test_start_up_serves_the_newest_valid_version_and_says_why(tmp_path, artifacts):
  serving = tmp_path / "bundles"
  good = push(serving, artifacts)
  bad = push(serving, artifacts)
  corrupt(serving, bad, USERS, "truncate")
  live = LiveRecommender(str(serving))
  assert live.current.version == good
  health = live.health()
  assert health["status"] == "degraded" and str(bad) in health["reason"]
  assert USERS in health["reason"]
  # The failed version is remembered, not retried at every poll.
  for _ in range(3):
    assert not live.refresh()
  assert live.reload_failures == 1 and live.current.version == good
  # Nothing valid at all: a clear error naming each version's problem.
  corrupt(serving, good, CANDIDATES, "truncate")
  with pytest.raises(BundleNotFoundError, match="no valid bundle") as e:
    LiveRecommender(str(serving))
  assert str(good) in str(e.value) and str(bad) in str(e.value)


def test_hot_swap_refuses_a_corrupt_push_and_takes_the_next_good_one(tmp_path, artifacts):
  serving = tmp_path / "bundles"
  first = push(serving, artifacts)
  live = LiveRecommender(str(serving))
  broken = push(serving, artifacts)
  corrupt(serving, broken, CANDIDATES, "truncate")
  assert not live.refresh() and live.current.version == first
  assert live.health()["status"] == "degraded"
  fixed = push(serving, artifacts)
  assert live.refresh() and live.current.version == fixed
  assert live.health() == {"status": "ok", "version": fixed, "pinned": None}
  user = next(iter(live.current.retriever.users))
  assert live.current.recommend(user, k=3)["version"] == fixed


def test_rollback_pins_an_older_version_until_unpinned(tmp_path, artifacts):
  serving = tmp_path / "bundles"
  old = push(serving, artifacts)
  new = push(serving, artifacts)
  live = LiveRecommender(str(serving))
  assert live.current.version == new
  bundle_layout.pin(str(serving), old)
  assert live.refresh() and live.current.version == old
  assert live.health() == {"status": "ok", "version": old, "pinned": old}
  assert LiveRecommender(str(serving)).current.version == old  # a restart keeps the pin
  with pytest.raises(bundle_layout.InvalidBundleError, match="no version 12345"):
    bundle_layout.pin(str(serving), 12345)
  bundle_layout.pin(str(serving), None)
  assert live.refresh() and live.current.version == new


def test_a_push_that_fails_midway_publishes_nothing(tmp_path, artifacts, monkeypatch):
  serving = tmp_path / "bundles"
  first = push(serving, artifacts)
  live = LiveRecommender(str(serving))
  real_write = pusher.write_file

  def disk_full(path, content, binary=False):
    if path.endswith(USERS):
      raise OSError(errno.ENOSPC, "No space left on device", path)
    real_write(path, content, binary)

  monkeypatch.setattr(pusher, "write_file", disk_full)
  with pytest.raises(OSError, match="No space left"):
    push(serving, artifacts)
  assert bundle_layout.versions(str(serving)) == [first]
  assert not [n for n in os.listdir(serving) if n.startswith(bundle_layout.TEMP_PREFIX)]
  assert not live.refresh() and live.health()["status"] == "ok"


def test_a_killed_push_leaves_a_temp_dir_the_next_push_removes(tmp_path, artifacts):
  serving = tmp_path / "bundles"
  push(serving, artifacts)
  dead_pid = 2 ** 22 + 12345  # above the default pid_max: no such process
  stale = serving / f"{bundle_layout.TEMP_PREFIX}1-{dead_pid}"
  live_tmp = serving / f"{bundle_layout.TEMP_PREFIX}2-{os.getpid()}"  # a push in progress
  for d in (stale, live_tmp):
    (d / "query_model").mkdir(parents=True)
  version = push(serving, artifacts)
  assert not stale.exists() and live_tmp.exists()
  assert bundle_layout.versions(str(serving))[-1] == version
  with open(os.path.join(bundle_layout.version_dir(str(serving), version),
                         bundle_layout.MANIFEST_FILE)) as f:
    assert json.load(f)["files"]


def test_a_tree_ah_index_below_the_recall_bar_is_refused_and_nothing_is_pushed(
    tmp_path, artifacts):
  """The IndexBuilder and the BundlePusher executors, run for real on the pushed run's
  model and catalogue with the exact-search threshold below the catalogue's size."""
  from components import artifact_types  # pylint: disable=g-import-not-at-top
  from components.index_builder import executor as index_builder  # pylint: disable=g-import-not-at-top
  from tfx.dsl.components.base import base_beam_executor  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top

  def output(artifact_class, name):
    artifact = artifact_class()
    artifact.uri = str(tmp_path / name)
    os.makedirs(artifact.uri)
    return artifact

  index, blessing = output(artifact_types.RetrievalIndex, "index"), output(
      standard_artifacts.ModelBlessing, "blessing")
  context = base_beam_executor.BaseBeamExecutor.Context(
      beam_pipeline_args=direct_runner_args(),
      tmp_dir=str(tmp_path / "tmp"), unique_id="index-builder")
  index_builder.Executor(context).Do(
      {"model": [artifacts["model"]], "candidates": [artifacts["candidates"]],
       "examples": artifacts["examples"], "transform_graph": [artifacts["transform_graph"]]},
      {"index": [index], "blessing": [blessing]},
      {"min_recall": 0.999, "exact_below": 10, "search_fraction": 0.3,
       "min_leaves_searched": 1, "reorder": 1000,
       "max_queries": 1000, "seed": 42})
  recall = index.get_float_custom_property("recall_at_10")
  assert index.get_string_custom_property("search_mode") == scann_index.SCANN
  assert index.get_int_custom_property("num_candidates") > 10 and recall < 0.999
  assert blessing.get_int_custom_property("blessed") == 0

  serving = tmp_path / "bundles"
  pushed = output(standard_artifacts.PushedModel, "pushed")
  pusher.Executor().Do(
      {"model": [artifacts["model"]], "model_blessing": [artifacts["model_blessing"]],
       "index": [index], "index_blessing": [blessing], "ranking_model": [artifacts["ranking"]],
       "ranking_blessing": [artifacts["ranking_blessing"]], "examples": artifacts["examples"]},
      {"pushed_model": [pushed]}, {"serving_dir": str(serving)})
  assert pushed.get_int_custom_property("pushed") == 0
  assert "index_blessing" in pushed.get_string_custom_property("not_pushed_reason")
  assert bundle_layout.versions(str(serving)) == []
