"""BundlePusher executor: copy blessed model + index (+ user table) into a new version."""

import json
import os
import shutil
import time
from typing import Any, Dict, List, Optional

from absl import logging
import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components import blessing as blessing_lib
from components import examples_io
from components.retrieval_evaluator.executor import serving_dir as model_serving_dir
from modules import features as F
from modules import retrieval_export
from serving import bundle_layout

MODEL_KEY = "model"
MODEL_BLESSING_KEY = "model_blessing"
INDEX_KEY = "index"
INDEX_BLESSING_KEY = "index_blessing"
EXAMPLES_KEY = "examples"
PUSHED_MODEL_KEY = "pushed_model"
SERVING_DIR_KEY = "serving_dir"


def user_table(examples: types.Artifact) -> List[Dict]:
  """Each user's raw features (those present), rated movies (newest first) and last
  rating time."""
  users: Dict[str, Dict] = {}
  for split in artifact_utils.decode_split_names(examples.split_names):
    for raw in examples_io.read_serialized(examples, split):
      feature = tf.train.Example.FromString(raw).features.feature
      user_id = feature[F.USER_ID].bytes_list.value[0].decode()
      user = users.get(user_id)
      if user is None:
        user = users[user_id] = {"user_id": user_id, "features": {}, "rated": [],
                                 "last_timestamp": 0}
        for name in F.USER_DEMOGRAPHIC_FEATURES:
          if name in feature:
            values = feature[name]
            user["features"][name] = (values.int64_list.value[0] if values.int64_list.value
                                      else values.bytes_list.value[0].decode())
      timestamp = feature[F.TIMESTAMP].int64_list.value[0]
      user["rated"].append((timestamp, feature[F.MOVIE_ID].bytes_list.value[0].decode()))
      user["last_timestamp"] = max(user["last_timestamp"], timestamp)
  for user in users.values():  # newest first, as the query tower's history expects
    user["rated"] = [movie for _, movie in sorted(user["rated"], key=lambda r: -r[0])]
  return [users[u] for u in sorted(users)]


def serving_version_of(serving_dir: str, model: types.Artifact,
                       index: types.Artifact) -> Optional[str]:
  """The newest bundle's path if it already serves exactly this model and index."""
  found = bundle_layout.versions(serving_dir)
  if not found:
    return None
  path = bundle_layout.version_dir(serving_dir, found[-1])
  with open(os.path.join(path, bundle_layout.MANIFEST_FILE)) as f:
    manifest = json.load(f)
  same = (manifest["retrieval_model"]["id"] == model.id and manifest["index"]["id"] == index.id)
  return path if same else None


def next_version(serving_dir: str) -> int:
  existing = bundle_layout.versions(serving_dir)
  return max([int(time.time())] + [v + 1 for v in existing])


def write_bundle(serving_dir: str, model: types.Artifact, index: types.Artifact,
                 examples: types.Artifact, extra_manifest: Optional[Dict] = None) -> str:
  """Writes a new version atomically (temp dir, then rename); returns its path."""
  os.makedirs(serving_dir, exist_ok=True)
  version = next_version(serving_dir)
  final = bundle_layout.version_dir(serving_dir, version)
  tmp = os.path.join(serving_dir, f".tmp-{version}-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    shutil.copytree(os.path.join(model_serving_dir(model), retrieval_export.QUERY_DIR),
                    os.path.join(tmp, bundle_layout.QUERY_MODEL_DIR))
    shutil.copytree(index.uri, os.path.join(tmp, bundle_layout.INDEX_DIR))
    users = user_table(examples)
    with open(os.path.join(tmp, bundle_layout.USERS_FILE), "w") as f:
      for user in users:
        f.write(json.dumps(user) + "\n")
    manifest = {
        "version": version,
        "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "retrieval_model": {"uri": model.uri, "id": model.id},
        "index": {"uri": index.uri, "id": index.id,
                  "num_candidates": index.get_int_custom_property("num_candidates")
                  if index.has_custom_property("num_candidates") else None},
        "num_users": len(users),
        "default_timestamp": max((u["last_timestamp"] for u in users), default=0),
        **(extra_manifest or {}),
    }
    with open(os.path.join(tmp, bundle_layout.MANIFEST_FILE), "w") as f:
      json.dump(manifest, f, indent=2)
    os.rename(tmp, final)  # atomic on one filesystem: readers see all of it or nothing
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return final


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    pushed = artifact_utils.get_single_instance(output_dict[PUSHED_MODEL_KEY])
    blessings = {key: artifact_utils.get_single_instance(input_dict[key])
                 for key in (MODEL_BLESSING_KEY, INDEX_BLESSING_KEY)}
    unblessed = [key for key, b in blessings.items() if not blessing_lib.is_blessed(b)]
    if unblessed:
      reasons = "; ".join(f"{key}: {b.get_string_custom_property(blessing_lib.REASONS_KEY)}"
                          for key, b in blessings.items() if key in unblessed)
      logging.info("BundlePusher: not pushing (%s)", reasons)
      pushed.set_int_custom_property("pushed", 0)
      pushed.set_string_custom_property("not_pushed_reason", reasons)
      return
    model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
    index = artifact_utils.get_single_instance(input_dict[INDEX_KEY])
    examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
    serving_dir = exec_properties[SERVING_DIR_KEY]
    path = serving_version_of(serving_dir, model, index)
    if path:  # e.g. a rerun that re-blessed the same model: nothing new to serve
      logging.info("BundlePusher: %s already serves this model and index", path)
    else:
      path = write_bundle(serving_dir, model, index, examples)
      logging.info("BundlePusher: pushed %s", path)
    pushed.set_int_custom_property("pushed", 1)
    pushed.set_string_custom_property("pushed_destination", path)
    pushed.set_int_custom_property("pushed_version", int(os.path.basename(path)))
    io_utils.write_string_file(os.path.join(pushed.uri, "pushed.json"),
                               json.dumps({"destination": path}))
