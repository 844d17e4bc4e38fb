"""Where the console tool reads and writes, one function per location, and the small
parsing helpers its commands share."""

import json
import os
from typing import List, Optional

from modules.errors import ConfigError
from pipeline import config as config_lib


def output_dir(args) -> str:
  """--output-dir, else $MOVREC_OUTPUT_DIR, else ./outputs."""
  return (getattr(args, "output_dir", None) or
          os.environ.get(config_lib.ENV_OUTPUT_DIR, config_lib.DEFAULT_OUTPUT_DIR))


def serving_dir(args) -> str:
  """--serving-dir, else <output dir>/serving/<pipeline name>."""
  if getattr(args, "serving_dir", None):
    return args.serving_dir
  return os.path.join(os.path.abspath(output_dir(args)), "serving", args.pipeline_name)


def metadata_path(args) -> str:
  """--metadata, else the local runs' SQLite store under the output dir."""
  return args.metadata or os.path.join(os.path.abspath(output_dir(args)), "metadata",
                                       args.pipeline_name, "metadata.db")


def report_path(args, run_id: str) -> str:
  """--out, else <output dir (or the store's folder)>/reports/run-<id>.html."""
  if args.out:
    return args.out
  base = (os.path.dirname(args.metadata) if args.metadata
          else os.path.abspath(output_dir(args)))
  return os.path.join(base, "reports", f"run-{run_id.replace(':', '')}.html")


def quiet_imports(args):
  """A context in which imports' warnings and C++ logs go to a file, not the console."""
  from pipeline import progress  # pylint: disable=g-import-not-at-top
  base = output_dir(args)
  if "://" in base:  # a cluster's bucket (compile): this machine's log stays local
    base = config_lib.DEFAULT_OUTPUT_DIR
  return progress.stderr_to_file(os.path.join(base, "logs", "imports.log"))


def key_values(pairs: Optional[List[str]], flag: str) -> dict:
  """["epochs=5", "hidden_layers=[128]"] -> {"epochs": 5, "hidden_layers": [128]} (JSON
  values; anything else stays a string)."""
  out = {}
  for pair in pairs or []:
    key, sep, value = pair.partition("=")
    if not sep:
      raise ConfigError(f"{flag} {pair!r}: expected NAME=VALUE")
    try:
      out[key] = json.loads(value)
    except json.JSONDecodeError:
      out[key] = value
  return out


def given(**values) -> dict:
  """The flags the user passed (argparse default None): the rest keep PipelineConfig's
  defaults, which live only there."""
  return {name: value for name, value in values.items() if value is not None}
