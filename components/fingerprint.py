"""Content fingerprints that make TFX's cache follow code and schema edits.

TFX caches an execution on its inputs and parameters. A preprocessing_fn or run_fn given
by import path, or a schema given by file path, is a string that does not change when the
code or file does; these digests are passed as parameters so that it does.
"""

import hashlib
import os


def file_sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def package_sha256(package) -> str:
  """SHA-256 over the .py sources of an imported package (names and contents)."""
  root = os.path.dirname(os.path.abspath(package.__file__))
  digest = hashlib.sha256()
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
    for name in sorted(f for f in filenames if f.endswith(".py")):
      path = os.path.join(dirpath, name)
      digest.update(os.path.relpath(path, root).encode())
      digest.update(file_sha256(path).encode())
  return digest.hexdigest()
