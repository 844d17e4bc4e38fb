"""MovieLensExampleGen: one component, two outputs (ratings Examples, movie catalogue).

A FileBasedExampleGen subclass so that TFX's FileBasedDriver resolves spans/versions and
fingerprints the data files (changed files invalidate the cache), and so that the
Kubeflow V2 compiler gives it ExampleGen's driver step.
"""

from typing import Optional

from tfx import types
from tfx.components.example_gen import component as example_gen_component
from tfx.components.example_gen import driver
from tfx.dsl.components.base import base_beam_component
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.proto import range_config_pb2
from tfx.types import component_spec
from tfx.types import standard_artifacts

from components.movielens_example_gen import executor
from components.movielens_example_gen import layouts


class MovieLensExampleGenSpec(types.ComponentSpec):
  """Parameters and outputs of MovieLensExampleGen."""

  PARAMETERS = {
      # Read by FileBasedDriver: the data directory and the glob of the layout's files
      # (may contain {SPAN}); the driver fingerprints every file the glob matches.
      "input_base": component_spec.ExecutionParameter(type=str),
      "input_config": component_spec.ExecutionParameter(type=example_gen_pb2.Input),
      "range_config": component_spec.ExecutionParameter(
          type=range_config_pb2.RangeConfig, optional=True),
      "output_file_format": component_spec.ExecutionParameter(type=int),
      "layout": component_spec.ExecutionParameter(type=str),
      "split_method": component_spec.ExecutionParameter(type=str),
      "train_fraction": component_spec.ExecutionParameter(type=float),
      "split_seed": component_spec.ExecutionParameter(type=int),
      # Unix seconds; 0 derives the cutoff as the train_fraction quantile of time.
      "temporal_cutoff": component_spec.ExecutionParameter(type=int),
      # split "last": how many of each user's latest ratings are eval.
      "eval_per_user": component_spec.ExecutionParameter(type=int),
      "skip_bad_rows": component_spec.ExecutionParameter(type=int),
  }
  INPUTS = {}
  OUTPUTS = {
      executor.EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
      executor.CANDIDATES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
  }


class MovieLensExampleGen(example_gen_component.FileBasedExampleGen):
  """Ingests a GroupLens MovieLens directory.

  Outputs:
    examples: ratings joined with movie and user features, splits `train` and `eval`.
    candidates: the movie catalogue (id, title, genres, release year), split `all`.
  """

  SPEC_CLASS = MovieLensExampleGenSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
  DRIVER_CLASS = driver.FileBasedDriver

  def __init__(self,
               input_base: str,
               layout: str,
               split_method: str,
               train_fraction: float,
               split_seed: int,
               temporal_cutoff: int,
               eval_per_user: int,
               skip_bad_rows: bool = False,
               span_pattern: Optional[str] = None,
               range_config: Optional[range_config_pb2.RangeConfig] = None):
    """Args:
      input_base: the directory holding the GroupLens files (local, gs://, ...).
      layout: one of `layouts.LAYOUTS` ("ml-100k", "ml-1m", "ml-latest").
      split_method: "last" (each user's `eval_per_user` latest ratings are eval, the
        next-item protocol), "random" (seeded, `train_fraction` of ratings to train) or
        "temporal" (ratings before `temporal_cutoff` train, the rest eval).
      train_fraction: share of ratings in train (random), or the time quantile used as
        the cutoff when `temporal_cutoff` is 0 (temporal).
      split_seed: seed of the random split.
      temporal_cutoff: unix seconds; 0 derives it from `train_fraction`.
      eval_per_user: with "last", how many of each user's latest ratings are eval.
      skip_bad_rows: skip (and count) unusable rows instead of failing.
      span_pattern: sub-directory pattern with {SPAN} (e.g. "span-{SPAN}") for data
        that arrives in spans; None reads `input_base` itself.
      range_config: which spans to read (default: the latest).
    """
    if layout not in layouts.LAYOUTS:
      raise ValueError(f"layout {layout!r} is not one of {sorted(layouts.LAYOUTS)}.")
    if split_method not in executor.SPLIT_METHODS:
      raise ValueError(f"split_method {split_method!r} is not one of {executor.SPLIT_METHODS}.")
    if not 0.0 < train_fraction < 1.0:
      raise ValueError(f"train_fraction {train_fraction} must be strictly between 0 and 1.")
    if eval_per_user < 1:
      raise ValueError(f"eval_per_user {eval_per_user} must be at least 1.")
    file_glob = layouts.LAYOUTS[layout].file_glob
    pattern = f"{span_pattern}/{file_glob}" if span_pattern else file_glob
    spec = MovieLensExampleGenSpec(
        input_base=input_base,
        input_config=example_gen_pb2.Input(
            splits=[example_gen_pb2.Input.Split(name="ratings", pattern=pattern)]),
        range_config=range_config,
        output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        layout=layout,
        split_method=split_method,
        train_fraction=train_fraction,
        split_seed=split_seed,
        temporal_cutoff=temporal_cutoff,
        eval_per_user=eval_per_user,
        skip_bad_rows=int(skip_bad_rows),
        examples=types.Channel(type=standard_artifacts.Examples),
        candidates=types.Channel(type=standard_artifacts.Examples))
    # Skip FileBasedExampleGen.__init__ (it builds its own spec); keep its class identity.
    base_beam_component.BaseBeamComponent.__init__(self, spec=spec)
