"""A real MariaDB / MySQL server for tests: Debian's package, started in a temporary
directory on a loopback port, stopped at the end. Skipped where the package is missing,
failed instead when MOVREC_REQUIRE_MYSQL is set (CI installs it)."""
import getpass
import os
import shutil
import socket
import subprocess
import time

import pytest

REQUIRE_ENV = "MOVREC_REQUIRE_MYSQL"


def _binary(*names):
  for name in names:
    for folder in ("", "/usr/sbin/", "/usr/bin/"):
      path = shutil.which(folder + name) if folder else shutil.which(name)
      if path:
        return path
  return None


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class MySQLServer:
  def __init__(self, root):
    server = _binary("mariadbd", "mysqld")
    install = _binary("mariadb-install-db", "mysql_install_db")
    if not server or not install:
      if os.environ.get(REQUIRE_ENV):
        pytest.fail("a MariaDB/MySQL server is required (.ci/run installs Debian's "
                    "mariadb-server package)")
      pytest.skip("Debian's mariadb-server package is not installed")
    self.root, self.port, user = str(root), _free_port(), getpass.getuser()
    data = os.path.join(self.root, "data")
    subprocess.run([install, "--no-defaults", f"--datadir={data}", f"--user={user}",
                    "--auth-root-authentication-method=normal", "--skip-test-db"],
                   check=True, capture_output=True, timeout=120)
    self.process = subprocess.Popen(
        [server, "--no-defaults", f"--datadir={data}", f"--user={user}",
         f"--socket={self.root}/mysqld.sock", f"--port={self.port}",
         "--bind-address=127.0.0.1", f"--pid-file={self.root}/mysqld.pid",
         f"--log-error={self.root}/error.log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    self._wait_until_ready()

  def _wait_until_ready(self, timeout=60.0):
    import pymysql  # pylint: disable=g-import-not-at-top
    deadline = time.monotonic() + timeout
    while True:
      try:
        pymysql.connect(host="127.0.0.1", port=self.port, user="root").close()
        return
      except pymysql.err.OperationalError:
        if self.process.poll() is not None or time.monotonic() > deadline:
          with open(os.path.join(self.root, "error.log")) as f:
            raise RuntimeError("the MySQL server did not start:\n" + f.read()[-2000:])
        time.sleep(0.3)

  def connection_config_file(self, database: str) -> str:
    """A text-format ml_metadata ConnectionConfig for `database` (created on first use)."""
    path = os.path.join(self.root, f"{database}.pbtxt")
    with open(path, "w") as f:
      f.write(f'mysql {{ host: "127.0.0.1" port: {self.port} database: "{database}" '
              f'user: "root" }}\n')
    return path

  def stop(self):
    self.process.terminate()
    self.process.wait(timeout=60)
