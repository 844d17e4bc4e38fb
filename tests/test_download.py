"""Archive download against a real HTTP server on loopback: verified, atomic."""
import functools
import hashlib
import http.server
import io
import os
import threading
import zipfile

import pytest

from components.movielens_example_gen import download, layouts, synthetic


@pytest.fixture()
def server(tmp_path, synthetic_data):
  src = synthetic.write(synthetic_data, str(tmp_path / "src" / "ml-100k"), "ml-100k")
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as zf:
    for name in os.listdir(src):
      zf.write(os.path.join(src, name), f"ml-100k/{name}")
  served = tmp_path / "www"
  served.mkdir()
  (served / "ml-100k.zip").write_bytes(buf.getvalue())
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
  handler.log_message = lambda *a: None
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  data = buf.getvalue()
  yield (f"http://127.0.0.1:{httpd.server_address[1]}/ml-100k.zip", len(data),
         hashlib.sha256(data).hexdigest())
  httpd.shutdown()


def test_official_checksums_come_from_tfds():
  archives = download.official_archives()
  assert archives["ml-100k"].size == 4924029
  assert archives["ml-100k"].sha256.startswith("50d2a982")
  assert {"ml-1m", "ml-25m", "ml-latest-small"} <= set(archives)


def test_download_verifies_and_extracts(tmp_path, server):
  url, size, sha = server
  path = download.download("ml-100k", cache_dir=str(tmp_path / "cache"),
                           archive=download.Archive(url, size, sha), progress=False)
  assert layouts.detect_layout(path).name == "ml-100k"
  # A second call uses the cache (the server is not needed).
  assert download.download("ml-100k", cache_dir=str(tmp_path / "cache"),
                           archive=download.Archive("http://127.0.0.1:9/none", 0, ""),
                           progress=False) == path


def test_checksum_mismatch_leaves_nothing_behind(tmp_path, server):
  url, size, _ = server
  cache = tmp_path / "cache"
  with pytest.raises(layouts.MovieLensDataError, match="expected .* SHA-256"):
    download.download("ml-100k", cache_dir=str(cache),
                      archive=download.Archive(url, size, "0" * 64), progress=False)
  assert os.listdir(cache) == []


def test_offline_error_names_directory_and_files(tmp_path):
  with pytest.raises(layouts.MovieLensDataError) as err:
    download.download("ml-100k", cache_dir=str(tmp_path),
                      archive=download.Archive("http://127.0.0.1:9/ml-100k.zip", 1, "x"),
                      progress=False, timeout=5)
  assert "--data-dir" in str(err.value) and "u.data" in str(err.value)
  assert str(tmp_path / "ml-100k") in str(err.value)
