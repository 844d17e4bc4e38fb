"""File access for bundles: local paths through the standard library, URLs (gs://...)
through tf.io.gfile, imported only for them, so that a process that only checks bundles
(the `movrec serve --workers` supervisor) does not load TensorFlow (~480 MiB)."""

import builtins
import os
from typing import IO, Iterator, List, Tuple


def _is_url(path: str) -> bool:
  return "://" in path


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


def exists(path: str) -> bool:
  return _gfile().exists(path) if _is_url(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  return _gfile().isdir(path) if _is_url(path) else os.path.isdir(path)


def listdir(path: str) -> List[str]:
  """Entry names, without the trailing "/" object stores give directories."""
  names = _gfile().listdir(path) if _is_url(path) else os.listdir(path)
  return [name.rstrip("/") for name in names]


def walk(path: str) -> Iterator[Tuple[str, List[str], List[str]]]:
  return _gfile().walk(path) if _is_url(path) else os.walk(path)


def size(path: str) -> int:
  return _gfile().stat(path).length if _is_url(path) else os.path.getsize(path)


def open(path: str, mode: str = "r") -> IO:  # pylint: disable=redefined-builtin
  """The file; reading one that does not exist raises FileNotFoundError, for URLs too."""
  if not _is_url(path):
    return builtins.open(path, mode)
  if "r" in mode and not _gfile().exists(path):
    raise FileNotFoundError(path)
  return _gfile().GFile(path, mode)


def remove(path: str) -> None:
  if _is_url(path):
    _gfile().remove(path)
  else:
    os.remove(path)


def rename(source: str, target: str) -> None:
  """Moves `source` to `target`, replacing it (atomically on a local file system)."""
  if _is_url(source):
    _gfile().rename(source, target, overwrite=True)
  else:
    os.replace(source, target)
