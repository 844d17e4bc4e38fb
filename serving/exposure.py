"""What the HTTP service's processes settle before any loads a model (and TensorFlow):
whether it may bind where it was asked to, and where worker processes share metrics.
`movrec serve --workers` checks these in its supervisor, which never loads a bundle."""

from typing import Optional

from modules.errors import MovrecError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable


class ServiceConfigError(MovrecError, ValueError):
  """The service would start unsafe (e.g. exposed beyond loopback without a token)."""


def check_exposure(host: str, token: Optional[str]) -> None:
  """Refuses to bind beyond loopback without a token."""
  if host not in LOOPBACK_HOSTS and not token:
    raise ServiceConfigError(
        f"serving on {host} exposes the service beyond this machine: set a token "
        "(MOVREC_API_TOKEN, or --token-file FILE) that callers send as "
        "'Authorization: Bearer <token>'")
