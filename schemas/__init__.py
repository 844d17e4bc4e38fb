"""Curated TFMD schemas (schema.pbtxt), shipped with the package so every runner finds them."""
import os

_HERE = os.path.dirname(os.path.abspath(__file__))

RATINGS = "ratings"  # layouts without user demographics
RATINGS_WITH_DEMOGRAPHICS = "ratings_demographics"
MOVIES = "movies"


def schema_path(name: str) -> str:
  """Absolute path of the curated schema.pbtxt called `name`."""
  path = os.path.join(_HERE, name, "schema.pbtxt")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No curated schema {name!r} at {path}.")
  return path


def ratings_schema_name(has_demographics: bool) -> str:
  return RATINGS_WITH_DEMOGRAPHICS if has_demographics else RATINGS
