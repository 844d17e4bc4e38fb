"""The ML Metadata store of a run: SQLite under the output directory (the default), or a
shared server (MySQL / MariaDB) named by a text-format ConnectionConfig file; and the
lock that lets one run at a time write to it.

A run marks executions still RUNNING as abandoned (pipeline/abandoned.py), so two runs on
one store must never overlap. SQLite: an flock on `<store>.lock`. MySQL: a server-side
named lock (GET_LOCK), held by a connection open for the whole run; the server frees it
when that connection ends, so a killed run never leaves the store locked.
"""

import contextlib
import fcntl
import hashlib
import os
from typing import Iterator

import ml_metadata as mlmd
from google.protobuf import text_format
from ml_metadata.proto import metadata_store_pb2 as pb

from modules.errors import ConfigError
from pipeline.errors import StoreInUseError


def sqlite_config(path: str, writable: bool = True) -> pb.ConnectionConfig:
  """A writable config creates the file (and its folder) on first use."""
  if writable:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  config = pb.ConnectionConfig()
  config.sqlite.filename_uri = path
  config.sqlite.connection_mode = (
      pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE if writable
      else pb.SqliteMetadataSourceConfig.READONLY)
  return config


def load_connection_config(path: str) -> pb.ConnectionConfig:
  """A text-format ConnectionConfig, e.g. `mysql { host: "db" port: 3306 database: "mlmd"
  user: "movrec" password: "..." }`."""
  config = pb.ConnectionConfig()
  try:
    with open(path) as f:
      text_format.Parse(f.read(), config)
  except FileNotFoundError:
    raise ConfigError(f"connection config {path} does not exist") from None
  except text_format.ParseError as e:
    raise ConfigError(f"connection config {path} is not a text-format ml_metadata "
                      f"ConnectionConfig: {e}") from None
  if config.WhichOneof("config") not in ("mysql", "sqlite"):
    raise ConfigError(f"connection config {path} names no mysql {{...}} or sqlite {{...}} "
                      "store")
  return config


def open_store(config: pb.ConnectionConfig) -> mlmd.MetadataStore:
  try:
    return mlmd.MetadataStore(config)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f"cannot open the metadata store {describe(config)}: "
                      f"{type(e).__name__}: {e}") from None


def describe(config: pb.ConnectionConfig) -> str:
  """Where the store is, for messages (no password)."""
  if config.HasField("mysql"):
    m = config.mysql
    where = m.socket or f"{m.host or 'localhost'}:{m.port or 3306}"
    return f"mysql://{where}/{m.database}"
  return config.sqlite.filename_uri


@contextlib.contextmanager
def exclusive(config: pb.ConnectionConfig) -> Iterator[None]:
  """Holds the store's run lock, or raises StoreInUseError at once."""
  if config.HasField("mysql"):
    with _mysql_lock(config.mysql):
      yield
    return
  path = config.sqlite.filename_uri
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  lock_path = path + ".lock"
  with open(lock_path, "w") as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise StoreInUseError(
          f"Another run is using the metadata store {path} (lock {lock_path}). "
          "Wait for it to finish, or use another --output-dir.") from None
    yield


def mysql_lock_name(mysql: pb.MySQLDatabaseConfig) -> str:
  # GET_LOCK names are server-wide and at most 64 characters.
  return "movrec-run:" + hashlib.sha256(mysql.database.encode()).hexdigest()[:40]


@contextlib.contextmanager
def _mysql_lock(mysql: pb.MySQLDatabaseConfig) -> Iterator[None]:
  import pymysql  # pylint: disable=g-import-not-at-top
  where = describe(pb.ConnectionConfig(mysql=mysql))
  try:
    connection = pymysql.connect(
        host=mysql.host or "localhost", port=mysql.port or 3306, user=mysql.user,
        password=mysql.password, unix_socket=mysql.socket or None, connect_timeout=10)
  except pymysql.err.OperationalError as e:
    raise ConfigError(f"cannot reach the metadata store {where}: {e}") from None
  name = mysql_lock_name(mysql)
  try:
    with connection.cursor() as cursor:
      cursor.execute("SELECT GET_LOCK(%s, 0)", (name,))
      if cursor.fetchone()[0] != 1:
        raise StoreInUseError(
            f"Another run is using the metadata store {where} (MySQL lock {name!r}, held "
            "by a connection of that run). Wait for it to finish, or use another "
            "database.")
    yield
  finally:
    connection.close()  # frees the lock
