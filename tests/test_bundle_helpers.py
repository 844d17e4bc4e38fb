"""The pure helpers behind a push, beside the end-to-end runs that cover them indirectly:
the user table, popularity, bundle versions and the IndexBuilder's held-out queries."""
import json
import os
import time

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import standard_artifacts

from bundle import layout
from components.bundle_pusher import executor as pusher
from components.index_builder import executor as index_builder
from components.retrieval_evaluator import eval_set as eval_set_lib


def example(user, movie, timestamp, **features):
  values = {"user_id": [user.encode()], "movie_id": [movie.encode()]}
  feature = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=v)) for k, v in values.items()}
  feature["timestamp"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[timestamp]))
  for name, value in features.items():
    feature[name] = (tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
                     if isinstance(value, int) else
                     tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()])))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def examples_artifact(root, splits):
  artifact = standard_artifacts.Examples()
  artifact.uri = str(root)
  artifact.split_names = json.dumps(sorted(splits))
  for split, records in splits.items():
    os.makedirs(os.path.join(root, f"Split-{split}"))
    with tf.io.TFRecordWriter(os.path.join(root, f"Split-{split}", "part.gz"), "GZIP") as w:
      for record in records:
        w.write(record)
  return artifact


def test_user_table_has_every_user_newest_first_across_splits(tmp_path):
  artifact = examples_artifact(tmp_path / "ex", {
      "train": [example("1", "10", 100, user_age=30, user_gender="F"),
                example("1", "11", 300, user_age=30, user_gender="F"),
                example("2", "10", 50)],
      "eval": [example("1", "10", 400, user_age=30, user_gender="F")],  # 10 rated again
  })
  users = {u["user_id"]: u for u in pusher.user_table([artifact])}
  assert users["1"] == {"user_id": "1", "features": {"user_age": 30, "user_gender": "F"},
                        "rated": ["10", "11"], "rated_at": [400, 300], "last_timestamp": 400}
  assert users["2"] == {"user_id": "2", "features": {}, "rated": ["10"], "rated_at": [50],
                        "last_timestamp": 50}
  assert pusher.popularity(list(users.values())) == [["10", 2], ["11", 1]]
  assert pusher.popularity(list(users.values()), limit=1) == [["10", 2]]


def test_versions_count_only_complete_bundles_and_the_next_is_newer(tmp_path):
  serving = tmp_path / "bundles"
  for name, with_manifest in [("100", True), ("200", False), ("x", True), (".tmp-300-1", True)]:
    (serving / name).mkdir(parents=True)
    if with_manifest:
      (serving / name / layout.MANIFEST_FILE).write_text("{}")
  assert layout.versions(str(serving)) == [100]
  assert layout.version_dir(str(serving), 100) == os.path.join(str(serving), "100")
  assert layout.versions(str(tmp_path / "nothing")) == []
  assert pusher.next_version(str(serving)) >= int(time.time())
  (serving / "9999999999").mkdir()
  (serving / "9999999999" / layout.MANIFEST_FILE).write_text("{}")
  assert pusher.next_version(str(serving)) == 10_000_000_000


def write_bundle(write, serving_dir):
  """Version 5 with one indexed file and its manifest, written by `write(path, bytes)`."""
  write(os.path.join(serving_dir, "5", "index", "part.bin"), b"abc")
  digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")
  write(os.path.join(serving_dir, "5", layout.MANIFEST_FILE), json.dumps(
      {"files": {os.path.join("index", "part.bin"): {"size": 3, "sha256": digest}}}).encode())


def test_bundles_are_read_the_same_from_local_paths_and_urls(tmp_path):
  """Local paths go through the standard library, URLs (here TensorFlow's in-memory
  ram://, as gs:// would) through tf.io.gfile: the same versions, manifest, pin and
  refusals."""
  def write_local(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(data)

  def write_url(path, data):
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "wb") as f:
      f.write(data)

  for serving_dir, write in [(str(tmp_path / "bundles"), write_local),
                             (f"ram://bundles-{os.getpid()}", write_url)]:
    write_bundle(write, serving_dir)
    assert layout.versions(serving_dir) == [5]
    assert layout.verify(layout.version_dir(serving_dir, 5))["files"]
    assert layout.file_list(layout.version_dir(serving_dir, 5)) == layout.read_manifest(
        layout.version_dir(serving_dir, 5))["files"]
    layout.pin(serving_dir, 5)
    assert layout.pinned_version(serving_dir) == 5
    layout.pin(serving_dir, None)
    assert layout.pinned_version(serving_dir) is None
    with pytest.raises(layout.InvalidBundleError, match="no manifest"):
      layout.read_manifest(os.path.join(serving_dir, "6"))
    with pytest.raises(layout.InvalidBundleError, match="no version 7"):
      layout.pin(serving_dir, 7)
    # Altered: same size locally; ram:// appends, so there the size differs too.
    write(os.path.join(serving_dir, "5", "index", "part.bin"), b"abd")
    with pytest.raises(layout.InvalidBundleError, match="SHA-256|bytes"):
      layout.verify(layout.version_dir(serving_dir, 5))


class FakeEmbedder:
  """Records which serialized queries it was asked to embed (the towers are tested
  elsewhere; this checks which users are sampled)."""

  def embed_query_examples(self, serialized):
    return np.array([[float(s.decode().split(":")[1])] for s in serialized], np.float32)


def test_held_out_queries_are_a_seeded_sample_of_eval_users_latest_queries():
  users = [f"u{i}" for i in range(50)]
  data = eval_set_lib.EvalSet(
      catalogue_ids=np.array([]), catalogue_serialized=[], eval_serialized=[],
      eval_users=np.arange(50), eval_items=np.zeros(50, np.int64),
      eval_seconds=np.zeros(50, np.int64), user_ids=users,
      user_train_items=[], user_train_seconds=[], train_items=np.array([]),
      train_seconds=np.array([]),
      user_query_serialized=[f"query:{i}".encode() for i in range(50)], dropped_eval_rows=0)
  everyone = index_builder.held_out_queries(data, FakeEmbedder(), max_queries=100, seed=1)
  assert everyone.reshape(-1).tolist() == list(range(50))
  sample = index_builder.held_out_queries(data, FakeEmbedder(), max_queries=10, seed=1)
  again = index_builder.held_out_queries(data, FakeEmbedder(), max_queries=10, seed=1)
  other = index_builder.held_out_queries(data, FakeEmbedder(), max_queries=10, seed=2)
  picked = sample.reshape(-1).tolist()
  assert len(set(picked)) == 10 and picked == sorted(picked)
  assert picked == again.reshape(-1).tolist() and picked != other.reshape(-1).tolist()
