"""Errors the console tool reports as a message (no traceback). No TensorFlow import."""

from typing import Optional

from modules.errors import MovrecError


class PipelineRunError(MovrecError, RuntimeError):
  """A component failed; names it, the cause, and the full log."""

  def __init__(self, component: Optional[str], cause: BaseException, log_path: str):
    self.component, self.cause, self.log_path = component, cause, log_path
    where = f"{component} failed" if component else "The pipeline failed"
    super().__init__(f"{where}: {type(cause).__name__}: {cause}\nFull log: {log_path}")


class StoreInUseError(MovrecError, RuntimeError):
  """Another run holds the SQLite metadata store."""
