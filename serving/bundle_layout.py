"""What a pushed serving bundle holds. The BundlePusher writes it; serving/ reads it.

  <serving_dir>/<version>/      version: integer, increasing (push time in seconds)
    manifest.json               what was pushed, from which artifacts, with which metrics
    query_model/                the retrieval query tower (SavedModel, raw-feature input)
    index/                      the ScaNN index (components/index_builder/scann_index.py)
    ranking_model/              the ranking SavedModel (serve_features: raw inputs)
    ranking_model.tflite        its dense-input core as TensorFlow Lite (on-device)
    users.jsonl                 known users: raw features, rated movie ids, last rating time
    popularity.json             most rated movies first (the fallback for unknown users)

Versions are written to a hidden temporary directory and renamed into place, so a reader
never sees a half-written bundle; older versions are kept. On object stores (gs://), where
a directory cannot be renamed, the version is written in place with its manifest last,
and a version counts only once its manifest exists.
"""

import os
import re
from typing import List

import tensorflow as tf

MANIFEST_FILE = "manifest.json"
QUERY_MODEL_DIR = "query_model"
INDEX_DIR = "index"
USERS_FILE = "users.jsonl"
RANKING_MODEL_DIR = "ranking_model"
RANKING_TFLITE_FILE = "ranking_model.tflite"
POPULARITY_FILE = "popularity.json"
_VERSION = re.compile(r"^\d+$")


def versions(serving_dir: str) -> List[int]:
  """Complete bundle versions under `serving_dir`, oldest first."""
  if not tf.io.gfile.isdir(serving_dir):
    return []
  names = [name.rstrip("/") for name in tf.io.gfile.listdir(serving_dir)]
  return sorted(int(name) for name in names
                if _VERSION.match(name) and
                tf.io.gfile.exists(os.path.join(serving_dir, name, MANIFEST_FILE)))


def version_dir(serving_dir: str, version: int) -> str:
  return os.path.join(serving_dir, str(version))
