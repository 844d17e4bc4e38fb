"""A shared MySQL metadata store: the run lock in both directions with real processes on a
real server, and clear errors for an unreachable store. (Every inspection command and the
HTML report run against a MySQL-backed pipeline run in test_inspect.py.)"""
import io
import os
import subprocess
import sys
import textwrap

import pytest

from modules.errors import ConfigError
from pipeline import local_runner
from pipeline import metadata_store
from pipeline.config import PipelineConfig
from pipeline.errors import StoreInUseError


HOLDER = textwrap.dedent("""
    import sys, time
    from pipeline import metadata_store
    config = metadata_store.load_connection_config(sys.argv[1])
    with metadata_store.exclusive(config):
      print("held", flush=True)
      time.sleep(600)
""")


def test_a_second_run_on_a_locked_mysql_store_is_refused_until_the_holder_dies(
    mysql_server, synthetic_dir, tmp_path):
  path = mysql_server.connection_config_file("movrec_lock")
  config = metadata_store.load_connection_config(path)
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdout=subprocess.PIPE,
                            text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  try:
    assert holder.stdout.readline().strip() == "held"
    run_config = PipelineConfig(data_dir=synthetic_dir, output_dir=str(tmp_path),
                                metadata_connection_file=path)
    with pytest.raises(StoreInUseError) as refused:
      local_runner.run(run_config, out=io.StringIO())  # refused before any component runs
    assert "mysql://127.0.0.1:" in str(refused.value) and "movrec_lock" in str(refused.value)
    assert "Wait for it to finish" in str(refused.value)
  finally:
    holder.kill()  # SIGKILL: the server frees the lock when the connection drops
    holder.wait()
  with metadata_store.exclusive(config):  # free again
    with pytest.raises(StoreInUseError):
      with metadata_store.exclusive(config):  # and held: a second holder is refused
        pass


def test_an_unreachable_mysql_store_is_named(tmp_path):
  path = tmp_path / "down.pbtxt"
  path.write_text('mysql { host: "127.0.0.1" port: 1 database: "x" user: "root" }')
  with pytest.raises(ConfigError, match=r"cannot reach the metadata store mysql://127.0.0.1:1/x"):
    with metadata_store.exclusive(metadata_store.load_connection_config(str(path))):
      pass
  path.write_text("mysql { hostname: 1 }")
  with pytest.raises(ConfigError, match="is not a text-format ml_metadata ConnectionConfig"):
    metadata_store.load_connection_config(str(path))
