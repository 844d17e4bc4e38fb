"""The project's error type: a failure meant for the person running it.

Every error the project raises for bad input, a failed gate or an unusable artifact
derives from MovrecError (and from the built-in type it always was, so callers catching
ValueError or LookupError still do). Its message names what is wrong (which file, line,
flag, version) and what was expected; the console tool prints it without a traceback.
Anything else reaching `movrec`'s top level is a bug and keeps its traceback.

It lives in modules/, the package every other one may import.
"""


class MovrecError(Exception):
  """An error meant for the user."""


class ConfigError(MovrecError, ValueError):
  """A configuration value, flag or hyperparameter that cannot be used."""
