"""Download and verify an official GroupLens MovieLens archive.

Sizes and SHA-256 digests come from tensorflow-datasets' checksum file (a pinned
dependency), so there is one source for them. The archive is downloaded to a temporary
file, verified, and only then extracted into place (a temp dir renamed at the end), so an
interrupted or corrupt download never leaves a half-written dataset behind.
"""

import hashlib
import importlib.util
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from typing import Dict, NamedTuple, Optional

from components.movielens_example_gen import layouts

DEFAULT_DATASET = "ml-100k"
ENV_CACHE_DIR = "MOVREC_CACHE_DIR"


class Archive(NamedTuple):
  url: str
  size: int
  sha256: str


def _tfds_checksums_path() -> str:
  spec = importlib.util.find_spec("tensorflow_datasets")  # found without importing TF
  if spec is None or not spec.submodule_search_locations:
    raise RuntimeError("tensorflow-datasets is not installed; it carries the GroupLens "
                       "archive checksums.")
  return os.path.join(spec.submodule_search_locations[0], "url_checksums", "movielens.txt")


def official_archives() -> Dict[str, Archive]:
  """Dataset name (e.g. 'ml-100k') -> the official archive's URL, size and SHA-256."""
  archives = {}
  with open(_tfds_checksums_path(), encoding="utf-8") as f:
    for line in f:
      if line.strip() and not line.startswith("#"):
        url, size, sha256, file_name = line.split()[:4]
        archives[file_name[:-len(".zip")]] = Archive(url, int(size), sha256)
  return archives


def default_cache_dir() -> str:
  return os.environ.get(ENV_CACHE_DIR) or os.path.join(
      os.path.expanduser("~"), ".cache", "movrec")


def _fetch(archive: Archive, dest_file: str, progress: bool, timeout: float) -> None:
  digest = hashlib.sha256()
  with urllib.request.urlopen(archive.url, timeout=timeout) as response, \
       open(dest_file, "wb") as out:
    bar = None
    if progress:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      bar = tqdm(total=archive.size, unit="B", unit_scale=True,
                 desc=os.path.basename(archive.url))
    while True:
      chunk = response.read(1 << 16)
      if not chunk:
        break
      out.write(chunk)
      digest.update(chunk)
      if bar:
        bar.update(len(chunk))
    if bar:
      bar.close()
  size = os.path.getsize(dest_file)
  if size != archive.size or digest.hexdigest() != archive.sha256:
    raise layouts.MovieLensDataError(
        f"{archive.url}: downloaded {size} bytes with SHA-256 {digest.hexdigest()}; "
        f"expected {archive.size} bytes with SHA-256 {archive.sha256}. The file was "
        "discarded; try again, or download it by hand and pass its directory.")


def download(dataset: str = DEFAULT_DATASET, cache_dir: Optional[str] = None,
             archive: Optional[Archive] = None, progress: bool = True,
             timeout: float = 60.0) -> str:
  """Returns the directory of `dataset` in the cache, downloading it if needed.

  Raises MovieLensDataError naming the directory and the files expected when the archive
  cannot be fetched (offline) or fails verification.
  """
  cache_dir = cache_dir or default_cache_dir()
  target = os.path.join(cache_dir, dataset)
  if os.path.isdir(target):
    layouts.detect_layout(target)  # a complete earlier download
    return target
  if archive is None:
    archives = official_archives()
    if dataset not in archives:
      raise ValueError(f"Unknown MovieLens dataset {dataset!r}; known: {sorted(archives)}.")
    archive = archives[dataset]
  os.makedirs(cache_dir, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=cache_dir, prefix=f".{dataset}-") as tmp:
    zip_path = os.path.join(tmp, "archive.zip")
    try:
      _fetch(archive, zip_path, progress, timeout)
    except (urllib.error.URLError, OSError) as e:
      raise layouts.MovieLensDataError(
          f"No MovieLens data found and {archive.url} could not be downloaded ({e}).\n"
          f"Put the GroupLens files in a directory and pass it with --data-dir DIR or "
          f"MOVIELENS_DATA_DIR=DIR, or place the extracted '{dataset}' folder at {target}.\n"
          + layouts.expected_files_message(target)) from e
    extracted = os.path.join(tmp, "extracted")
    with zipfile.ZipFile(zip_path) as zf:
      zf.extractall(extracted)
    # GroupLens archives hold one top-level folder (e.g. ml-100k/).
    entries = os.listdir(extracted)
    root = os.path.join(extracted, entries[0]) if len(entries) == 1 else extracted
    layouts.detect_layout(root)
    shutil.move(root, target)  # same file system: an atomic rename into place
  return target
