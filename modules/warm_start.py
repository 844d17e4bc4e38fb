"""Warm start: a Trainer initialises its new model from the last blessed one.

Each Trainer saves, next to its SavedModels, a checkpoint of its Keras models and the
Transform vocabularies they were trained with (`save`). A later Trainer given that model
as TFX's `base_model` (`restore`) copies every variable whose checkpoint path and shape
match, and remaps embedding tables row by row through the vocabularies: a new span adds
users and movies, and Transform renumbers ids by frequency, so row i of the old table is
rarely row i of the new one. Rows of keys the old model never saw keep their fresh
initialisation. Embedding layers say which feature's vocabulary indexes them with `tag`.
"""

import os
from typing import Dict, Iterator, List, Mapping, Tuple

import numpy as np
import tensorflow as tf

from modules import features as F

# Under the Trainer's serving model directory (assets.extra: SavedModel loaders ignore it).
WARM_START_DIR = os.path.join("assets.extra", "warm_start")
_CHECKPOINT = "checkpoint"
_VOCABULARY_DIR = "vocabularies"
_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_VOCABULARY_FEATURE = "warm_start_vocabulary_feature"


def tag(layer, transformed_feature: str):
  """Marks an embedding layer as indexed by `transformed_feature`'s vocabulary ids."""
  raw = transformed_feature[:-len(F.transformed_name(""))]
  if raw in F.VOCABULARY_NAMES:
    setattr(layer, _VOCABULARY_FEATURE, raw)
  return layer


def save(serving_dir: str, roots: Mapping[str, tf.Module], tft_output) -> None:
  """Writes the checkpoint of `roots` and the vocabularies their tables use."""
  directory = os.path.join(serving_dir, WARM_START_DIR)
  tf.train.Checkpoint(**roots).write(os.path.join(directory, _CHECKPOINT))
  tf.io.gfile.makedirs(os.path.join(directory, _VOCABULARY_DIR))
  for raw in _tagged_features(roots):
    vocabulary = F.VOCABULARY_NAMES[raw]
    tf.io.gfile.copy(tft_output.vocabulary_file_by_name(vocabulary),
                     os.path.join(directory, _VOCABULARY_DIR, vocabulary), overwrite=True)


def restore(base_serving_dir: str, roots: Mapping[str, tf.Module], tft_output) -> Dict:
  """Initialises the (built) `roots` from a model saved by `save`; returns what was done.

  Raises FileNotFoundError when the base model has no warm-start checkpoint (a model
  from before warm start existed, or another kind of model).
  """
  directory = os.path.join(base_serving_dir, WARM_START_DIR)
  prefix = os.path.join(directory, _CHECKPOINT)
  if not tf.io.gfile.exists(prefix + ".index"):
    raise FileNotFoundError(f"base model {base_serving_dir} has no warm-start checkpoint "
                            f"({prefix}.index); it was saved without warm-start support")
  reader = tf.train.load_checkpoint(prefix)
  shapes = reader.get_variable_to_shape_map()
  tables = {variable.ref(): raw for raw, variable in _tagged_tables(roots)}
  summary = {"copied": 0, "remapped": {}, "skipped": []}
  for variable, paths in _variable_paths(roots):
    path = next((p for p in paths if p + _VALUE_SUFFIX in shapes), paths[0])
    if path + _VALUE_SUFFIX not in shapes:
      summary["skipped"].append(path)
      continue
    old = reader.get_tensor(path + _VALUE_SUFFIX)
    raw = tables.get(variable.ref())
    if raw is not None:
      new, kept = _remap_rows(old, variable.numpy(), _read_vocabulary(
          os.path.join(directory, _VOCABULARY_DIR, F.VOCABULARY_NAMES[raw])),
          _read_vocabulary(tft_output.vocabulary_file_by_name(F.VOCABULARY_NAMES[raw])))
      if new is None:
        summary["skipped"].append(path)
        continue
      variable.assign(new)
      summary["remapped"][path] = kept
    elif tuple(old.shape) == tuple(variable.shape):
      variable.assign(old)
      summary["copied"] += 1
    else:
      summary["skipped"].append(path)
  return summary


def _remap_rows(old: np.ndarray, new: np.ndarray, old_keys, new_keys) -> Tuple:
  """New table with each known key's old row, and the old out-of-vocabulary rows (those
  past the vocabulary) when both have as many; (None, 0) when the widths differ."""
  if old.shape[1:] != new.shape[1:]:
    return None, 0
  old_row = {key: i for i, key in enumerate(old_keys) if i < len(old)}
  pairs = [(i, old_row[key]) for i, key in enumerate(new_keys) if key in old_row and i < len(new)]
  oov = len(old) - len(old_keys)
  if oov > 0 and oov == len(new) - len(new_keys):
    pairs += [(len(new_keys) + j, len(old_keys) + j) for j in range(oov)]
  out = new.copy()
  if pairs:
    target, source = map(np.array, zip(*pairs))
    out[target] = old[source]
  return out, len(pairs)


def _read_vocabulary(path: str):
  with tf.io.gfile.GFile(path, "rb") as f:
    return [line.rstrip(b"\n") for line in f]


def _tagged_tables(roots) -> Iterator[Tuple[str, tf.Variable]]:
  for root in roots.values():
    for layer in root.submodules:
      raw = getattr(layer, _VOCABULARY_FEATURE, None)
      if raw is not None:
        for variable in layer.weights:
          yield raw, variable


def _tagged_features(roots):
  return sorted({raw for raw, _ in _tagged_tables(roots)})


def _variable_paths(roots) -> List[Tuple[tf.Variable, List[str]]]:
  """Every variable with all its object-graph paths. A checkpoint stores a shared variable
  (the tied movie embedding) under one of them; restore takes whichever it finds."""
  found = {}

  def visit(path, obj, ancestors):
    if isinstance(obj, tf.Variable):
      found.setdefault(obj.ref(), (obj, []))[1].append(path)
      return
    if id(obj) in ancestors:  # a cycle in the object graph
      return
    children = obj._trackable_children(save_type="checkpoint")  # pylint: disable=protected-access
    for name, child in children.items():
      visit(f"{path}/{name}", child, ancestors | {id(obj)})

  for name, root in roots.items():
    visit(name, root, frozenset())
  return list(found.values())
