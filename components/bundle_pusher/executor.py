"""BundlePusher executor: copy blessed model + index (+ user table) into a new version."""

import json
import os
import re
import shutil
import time
from typing import Any, Dict, List, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils
from tfx.utils import io_utils

from components import blessing as blessing_lib
from components import examples_io
from modules import features as F
from modules import retrieval_export
from modules import sequence_scorer
from bundle import contract
from bundle import layout as bundle_layout

MODEL_KEY = "model"
MODEL_BLESSING_KEY = "model_blessing"
RANKING_MODEL_KEY = "ranking_model"
RANKING_BLESSING_KEY = "ranking_blessing"
# The TwoStageEvaluator's blessing: recorded in the manifest, it decides serving's default
# order (ranking score when blessed); it does not gate the push.
ORDER_BLESSING_KEY = "order_blessing"
INDEX_KEY = "index"
INDEX_BLESSING_KEY = "index_blessing"
EXAMPLES_KEY = "examples"
PUSHED_MODEL_KEY = "pushed_model"
DEMOGRAPHIC_TYPES = {F.USER_AGE: tf.int64, F.USER_GENDER: tf.string,
                     F.USER_OCCUPATION: tf.string, F.USER_ZIP_CODE: tf.string}
SERVING_DIR_KEY = "serving_dir"


def _user_columns(examples: Sequence[types.Artifact]):
  """(user, movie, seconds columns over every split of every artifact, file order; each
  user's demographic features from their first Example carrying them), streamed."""
  spec = {F.USER_ID: tf.io.FixedLenFeature([1], tf.string),
          F.MOVIE_ID: tf.io.FixedLenFeature([1], tf.string),
          F.TIMESTAMP: tf.io.FixedLenFeature([1], tf.int64),
          **{name: tf.io.VarLenFeature(DEMOGRAPHIC_TYPES[name])
             for name in F.USER_DEMOGRAPHIC_FEATURES}}
  parts = {F.USER_ID: [], F.MOVIE_ID: [], F.TIMESTAMP: []}
  features: Dict[bytes, Dict] = {}
  for artifact in examples:
    for split in artifact_utils.decode_split_names(artifact.split_names):
      for parsed in examples_io.parsed_batches(artifact, split, spec):
        users = parsed[F.USER_ID].numpy().reshape(-1)
        for name in parts:
          parts[name].append(parsed[name].numpy().reshape(-1))
        for name in F.USER_DEMOGRAPHIC_FEATURES:
          given = parsed[name]
          rows, values = given.indices.numpy()[:, 0], given.values.numpy()
          owners, first = np.unique(users[rows], return_index=True)
          for user, i in zip(owners, first):
            found = features.setdefault(user, {})
            if name not in found:
              found[name] = (int(values[i]) if DEMOGRAPHIC_TYPES[name] == tf.int64
                             else values[i].decode())
  columns = {name: np.concatenate(p) if p else np.array([]) for name, p in parts.items()}
  return columns, features


def user_table(examples: Sequence[types.Artifact]) -> List[contract.UserRecord]:
  """Each user's raw features (those present), rated movies (newest first), when each
  was rated (`rated_at`, aligned with `rated`) and last rating time, over every split of
  every Examples artifact given (the training window's spans). Read as columns, one
  batch of Examples at a time."""
  columns, features = _user_columns(examples)
  user_names, users = np.unique(columns[F.USER_ID], return_inverse=True)  # sorted ids
  _, movies = np.unique(columns[F.MOVIE_ID], return_inverse=True)
  seconds = columns[F.TIMESTAMP].astype(np.int64)
  order = np.lexsort((-seconds, users))  # by user, newest first; ties keep file order
  # A movie rated again (in a later span) counts once, at its newest rating.
  pair = users[order].astype(np.int64) * (int(movies.max(initial=0)) + 1) + movies[order]
  _, first = np.unique(pair, return_index=True)
  order = order[np.sort(first)]
  bounds = np.searchsorted(users[order], np.arange(len(user_names) + 1))
  movie_ids = columns[F.MOVIE_ID]
  table = []
  for u, name in enumerate(user_names):
    rows = order[bounds[u]:bounds[u + 1]]
    rated_at = seconds[rows].tolist()
    table.append({"user_id": name.decode(), "features": features.get(name, {}),
                  "rated": [m.decode() for m in movie_ids[rows]], "rated_at": rated_at,
                  "last_timestamp": int(rated_at[0])})
  return table


def tflite_from_core(core_dir: str) -> bytes:
  """TensorFlow Lite flatbuffer of a dense-input core (the rating model's, the sequence
  scorer's)."""
  converter = tf.lite.TFLiteConverter.from_saved_model(core_dir)
  return converter.convert()


def copytree(source: str, target: str) -> None:
  """Recursive copy that works across file systems (local, gs://) via tf.io.gfile."""
  for dirpath, _, files in tf.io.gfile.walk(source):
    relative = os.path.relpath(dirpath, source)
    destination = target if relative == "." else os.path.join(target, relative)
    tf.io.gfile.makedirs(destination)
    for name in files:
      tf.io.gfile.copy(os.path.join(dirpath, name), os.path.join(destination, name),
                       overwrite=True)


def write_file(path: str, content, binary: bool = False) -> None:
  with tf.io.gfile.GFile(path, "wb" if binary else "w") as f:
    f.write(content)


def copy_ranking_model(ranking: types.Artifact, bundle_dir: str) -> None:
  from modules import ranking_model  # pylint: disable=g-import-not-at-top
  source = path_utils.serving_model_dir(ranking.uri)
  copytree(source, os.path.join(bundle_dir, bundle_layout.RANKING_MODEL_DIR))
  core_dir = os.path.join(source, ranking_model.CORE_DIR)
  write_file(os.path.join(bundle_dir, bundle_layout.RANKING_TFLITE_FILE),
             tflite_from_core(core_dir), binary=True)
  scorer_core = os.path.join(source, sequence_scorer.EXPORT_DIR, sequence_scorer.CORE_DIR)
  if tf.io.gfile.isdir(scorer_core):
    write_file(os.path.join(bundle_dir, bundle_layout.SEQUENCE_TFLITE_FILE),
               tflite_from_core(scorer_core), binary=True)


def popularity(users: List[Dict], limit: int = 1000) -> List[List]:
  """[[movie_id, number of ratings], ...], most rated first (the cold-start fallback)."""
  counts: Dict[str, int] = {}
  for user in users:
    for movie in user["rated"]:
      counts[movie] = counts.get(movie, 0) + 1
  return [[m, c] for m, c in sorted(counts.items(), key=lambda mc: (-mc[1], mc[0]))[:limit]]


def ranking_order(order_blessing: Optional[types.Artifact]) -> Optional[Dict]:
  """The manifest's record of the TwoStageEvaluator's decision (None: not evaluated)."""
  if order_blessing is None:
    return None
  return {"blessed": blessing_lib.is_blessed(order_blessing), "blessing_id": order_blessing.id,
          "reasons": order_blessing.get_string_custom_property(blessing_lib.REASONS_KEY)}


def serving_version_of(serving_dir: str, model: types.Artifact, index: types.Artifact,
                       ranking: Optional[types.Artifact] = None,
                       order_blessing: Optional[types.Artifact] = None) -> Optional[str]:
  """The newest bundle's path if it already serves exactly these artifacts."""
  found = bundle_layout.versions(serving_dir)
  if not found:
    return None
  path = bundle_layout.version_dir(serving_dir, found[-1])
  with tf.io.gfile.GFile(os.path.join(path, bundle_layout.MANIFEST_FILE)) as f:
    manifest = json.load(f)
  same = (manifest["retrieval_model"]["id"] == model.id and manifest["index"]["id"] == index.id
          and (manifest.get("ranking_model") or {}).get("id") == (ranking.id if ranking else None)
          and (manifest.get("ranking_order") or {}).get("blessing_id") ==
          (order_blessing.id if order_blessing else None))
  return path if same else None


def _fsync_tree(root: str) -> None:
  """Flushes every file under root, then the directories, to disk (before the rename
  that publishes them: a crash after the rename must not leave empty files behind)."""
  for dirpath, _, names in os.walk(root, topdown=False):
    for name in names:
      with open(os.path.join(dirpath, name), "rb") as f:
        os.fsync(f.fileno())
    _fsync_dir(dirpath)


def _fsync_dir(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def remove_stale_temp_dirs(serving_dir: str) -> List[str]:
  """Removes `.tmp-<version>-<pid>` directories whose push process is gone (a killed
  push); returns their names. Local directories only."""
  removed = []
  for name in os.listdir(serving_dir):
    match = re.match(rf"^{re.escape(bundle_layout.TEMP_PREFIX)}\d+-(\d+)$", name)
    if not match or _process_alive(int(match.group(1))):
      continue
    shutil.rmtree(os.path.join(serving_dir, name), ignore_errors=True)
    removed.append(name)
  return removed


def _process_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def next_version(serving_dir: str) -> int:
  existing = bundle_layout.versions(serving_dir)
  return max([int(time.time())] + [v + 1 for v in existing])


def write_bundle(serving_dir: str, model: types.Artifact, index: types.Artifact,
                 examples: Sequence[types.Artifact],
                 ranking: Optional[types.Artifact] = None,
                 order_blessing: Optional[types.Artifact] = None) -> str:
  """Writes a new version and returns its path. Locally: into a temp dir, then renamed
  into place (atomic). On object stores: in place, manifest last (see bundle_layout)."""
  tf.io.gfile.makedirs(serving_dir)
  local = "://" not in serving_dir
  if local:
    for name in remove_stale_temp_dirs(serving_dir):
      logging.warning("BundlePusher: removed %s, left by a push that did not finish", name)
  version = next_version(serving_dir)
  final = bundle_layout.version_dir(serving_dir, version)
  work = (os.path.join(serving_dir, f"{bundle_layout.TEMP_PREFIX}{version}-{os.getpid()}")
          if local else final)
  if tf.io.gfile.exists(work):
    tf.io.gfile.rmtree(work)
  try:
    copytree(os.path.join(path_utils.serving_model_dir(model.uri), retrieval_export.QUERY_DIR),
             os.path.join(work, bundle_layout.QUERY_MODEL_DIR))
    copytree(index.uri, os.path.join(work, bundle_layout.INDEX_DIR))
    if ranking is not None:
      copy_ranking_model(ranking, work)
    users = user_table(examples)
    write_file(os.path.join(work, bundle_layout.USERS_FILE),
               "".join(json.dumps(user) + "\n" for user in users))
    write_file(os.path.join(work, bundle_layout.POPULARITY_FILE), json.dumps(popularity(users)))
    manifest = {
        "version": version,
        "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "retrieval_model": {"uri": model.uri, "id": model.id},
        "index": {"uri": index.uri, "id": index.id,
                  "num_candidates": index.get_int_custom_property("num_candidates")
                  if index.has_custom_property("num_candidates") else None},
        "ranking_model": {"uri": ranking.uri, "id": ranking.id} if ranking else None,
        "ranking_order": ranking_order(order_blessing) if ranking else None,
        "num_users": len(users),
        "default_timestamp": max((u["last_timestamp"] for u in users), default=0),
        "files": bundle_layout.file_list(work),  # checked by serving before use
    }
    write_file(os.path.join(work, bundle_layout.MANIFEST_FILE), json.dumps(manifest, indent=2))
    if local:
      _fsync_tree(work)
      os.rename(work, final)  # readers see all of the version or nothing
      _fsync_dir(serving_dir)
  except BaseException:
    if local and tf.io.gfile.exists(work):
      tf.io.gfile.rmtree(work)
    raise
  return final


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    pushed = artifact_utils.get_single_instance(output_dict[PUSHED_MODEL_KEY])
    blessings = {key: artifact_utils.get_single_instance(input_dict[key])
                 for key in (MODEL_BLESSING_KEY, INDEX_BLESSING_KEY, RANKING_BLESSING_KEY)
                 if input_dict.get(key)}
    unblessed = [key for key, b in blessings.items() if not blessing_lib.is_blessed(b)]
    if unblessed:
      reasons = "; ".join(
          f"{key}: " + (b.get_string_custom_property(blessing_lib.REASONS_KEY) or
                        f"NOT_BLESSED (see the evaluation next to {b.uri})")
          for key, b in blessings.items() if key in unblessed)
      logging.info("BundlePusher: not pushing (%s)", reasons)
      pushed.set_int_custom_property(contract.PUSHED, 0)
      pushed.set_string_custom_property(contract.NOT_PUSHED_REASON, reasons)
      return
    model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
    index = artifact_utils.get_single_instance(input_dict[INDEX_KEY])
    examples = input_dict[EXAMPLES_KEY]  # this span, or the rolling window's spans
    ranking = (artifact_utils.get_single_instance(input_dict[RANKING_MODEL_KEY])
               if input_dict.get(RANKING_MODEL_KEY) else None)
    order = (artifact_utils.get_single_instance(input_dict[ORDER_BLESSING_KEY])
             if ranking is not None and input_dict.get(ORDER_BLESSING_KEY) else None)
    serving_dir = exec_properties[SERVING_DIR_KEY]
    path = serving_version_of(serving_dir, model, index, ranking, order)
    if path:  # e.g. a rerun that re-blessed the same model: nothing new to serve
      logging.info("BundlePusher: %s already serves this model and index", path)
    else:
      path = write_bundle(serving_dir, model, index, examples, ranking, order)
      logging.info("BundlePusher: pushed %s", path)
    pushed.set_int_custom_property(contract.PUSHED, 1)
    pushed.set_string_custom_property(contract.PUSHED_DESTINATION, path)
    pushed.set_int_custom_property(contract.PUSHED_VERSION, int(os.path.basename(path)))
    io_utils.write_string_file(os.path.join(pushed.uri, "pushed.json"),
                               json.dumps({"destination": path}))
