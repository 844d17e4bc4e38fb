"""What a pushed serving bundle holds. The BundlePusher writes it; serving/ reads it.

  <serving_dir>/<version>/      version: integer, increasing (push time in seconds)
    manifest.json               what was pushed, from which artifacts, with which metrics
    query_model/                the retrieval query tower (SavedModel, raw-feature input)
    index/                      the ScaNN index (bundle/scann_index.py)
    ranking_model/              the ranking SavedModel (serve_features: raw inputs)
    ranking_model.tflite        its dense-input core as TensorFlow Lite (on-device)
    sequence_scorer.tflite      the sequence scorer's core (vocabulary ids) as TensorFlow
                                Lite, when the ranking model has one
    users.jsonl                 known users: raw features, rated movie ids, last rating time
    popularity.json             most rated movies first (the fallback for unknown users)

Versions are written to a hidden temporary directory (`.tmp-<version>-<pid>`), flushed
to disk and renamed into place, so a reader never sees a half-written bundle; older
versions are kept, and a temporary directory left by a killed push is removed by the
next one. On object stores (gs://), where a directory cannot be renamed, the version is
written in place with its manifest last, and a version counts only once its manifest
exists.

The manifest lists every other file of the version with its size and SHA-256
(`files`); `verify` checks them before a version is served, so a truncated or altered
file is refused with the file named, not discovered by a failing request.

  <serving_dir>/pin.json        {"version": N}: serve N, not the newest (`movrec rollback`)
"""

import hashlib
import json
import os
import re
from typing import Dict, List, Optional

from bundle import files as bundle_files
from modules.errors import MovrecError

MANIFEST_FILE = "manifest.json"
QUERY_MODEL_DIR = "query_model"
INDEX_DIR = "index"
USERS_FILE = "users.jsonl"
RANKING_MODEL_DIR = "ranking_model"
RANKING_TFLITE_FILE = "ranking_model.tflite"
SEQUENCE_TFLITE_FILE = "sequence_scorer.tflite"
POPULARITY_FILE = "popularity.json"
PIN_FILE = "pin.json"
TEMP_PREFIX = ".tmp-"
_VERSION = re.compile(r"^\d+$")


class InvalidBundleError(MovrecError, ValueError):
  """A bundle version that must not be served (missing, truncated or altered file)."""


class BundleNotFoundError(MovrecError, FileNotFoundError):
  """No bundle version under a serving directory can be served."""


def versions(serving_dir: str) -> List[int]:
  """Complete bundle versions under `serving_dir`, oldest first."""
  if not bundle_files.isdir(serving_dir):
    return []
  return sorted(int(name) for name in bundle_files.listdir(serving_dir)
                if _VERSION.match(name) and
                bundle_files.exists(os.path.join(serving_dir, name, MANIFEST_FILE)))


def version_dir(serving_dir: str, version: int) -> str:
  return os.path.join(serving_dir, str(version))


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with bundle_files.open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def file_list(bundle_dir: str) -> Dict[str, Dict]:
  """{relative path: {"size", "sha256"}} of every file under bundle_dir but the manifest."""
  files = {}
  for dirpath, _, names in bundle_files.walk(bundle_dir):
    for name in names:
      path = os.path.join(dirpath, name)
      relative = os.path.relpath(path, bundle_dir)
      if relative != MANIFEST_FILE:
        files[relative] = {"size": bundle_files.size(path), "sha256": _sha256(path)}
  return dict(sorted(files.items()))


def read_manifest(bundle_dir: str) -> Dict:
  path = os.path.join(bundle_dir, MANIFEST_FILE)
  try:
    with bundle_files.open(path) as f:
      return json.load(f)
  except FileNotFoundError as e:
    raise InvalidBundleError(f"{path}: no manifest") from e
  except ValueError as e:
    raise InvalidBundleError(f"{path}: not valid JSON ({e})") from e


def verify(bundle_dir: str) -> Dict:
  """The manifest, once every file it lists has its size and SHA-256 (sizes first, so a
  truncated file is named without hashing the rest). Raises InvalidBundleError naming
  the first file that does not match. A manifest without a file list (pushed before
  bundles carried one) is accepted as is."""
  manifest = read_manifest(bundle_dir)
  files = manifest.get("files")
  if files is None:
    return manifest
  for relative, expected in files.items():
    path = os.path.join(bundle_dir, relative)
    if not bundle_files.exists(path):
      raise InvalidBundleError(f"{path}: missing (listed in the manifest)")
    size = bundle_files.size(path)
    if size != expected["size"]:
      raise InvalidBundleError(f"{path}: {size} bytes, the manifest says {expected['size']}")
  for relative, expected in files.items():
    path = os.path.join(bundle_dir, relative)
    if _sha256(path) != expected["sha256"]:
      raise InvalidBundleError(f"{path}: SHA-256 differs from the manifest's")
  return manifest


def pinned_version(serving_dir: str) -> Optional[int]:
  """The version `movrec rollback` pinned, or None (serve the newest valid one)."""
  path = os.path.join(serving_dir, PIN_FILE)
  if not bundle_files.exists(path):
    return None
  with bundle_files.open(path) as f:
    return int(json.load(f)["version"])


def versions_to_serve(serving_dir: str) -> List[int]:
  """Best first: the pinned version alone, else every complete version, newest first."""
  pinned = pinned_version(serving_dir)
  return [pinned] if pinned is not None else list(reversed(versions(serving_dir)))


def pin(serving_dir: str, version: Optional[int]) -> None:
  """Pins `version` (it must exist), or unpins with None."""
  path = os.path.join(serving_dir, PIN_FILE)
  if version is None:
    if bundle_files.exists(path):
      bundle_files.remove(path)
    return
  if version not in versions(serving_dir):
    raise InvalidBundleError(f"no version {version} under {serving_dir}; versions: "
                             f"{versions(serving_dir)}")
  temp = path + ".tmp"
  with bundle_files.open(temp, "w") as f:
    json.dump({"version": version}, f)
  bundle_files.rename(temp, path)
