"""Pipeline configuration: one dataclass, defaults here, overridable by flags or env vars.

Where things land, under `output_dir` (default ./outputs, or $MOVREC_OUTPUT_DIR):

  pipeline_root/<name>/       TFX artifacts, one folder per component and execution
  metadata/<name>/metadata.db the ML Metadata (SQLite) store of local runs, unless
                              `metadata_connection_file` names a shared (MySQL) one
  serving/<name>/             pushed serving bundles
  logs/                       full TFX/Beam/TensorFlow logs of each local run
"""

import dataclasses
import multiprocessing
import os
from typing import Dict, List, Optional, Tuple

from components.movielens_example_gen import layouts
from modules.errors import ConfigError
from modules.hparams import RankingHParams, RetrievalHParams

ENV_DATA_DIR = "MOVIELENS_DATA_DIR"
ENV_OUTPUT_DIR = "MOVREC_OUTPUT_DIR"
ENV_API_TOKEN = "MOVREC_API_TOKEN"  # the bearer token `movrec serve` requires of callers
DEFAULT_OUTPUT_DIR = "outputs"
DEFAULT_PIPELINE_NAME = "movielens-recommender"

PREPROCESSING_FN = "modules.preprocessing.preprocessing_fn"
RETRIEVAL_RUN_FN = "modules.retrieval_trainer.run_fn"
RANKING_RUN_FN = "modules.ranking_trainer.run_fn"

# The retrieval model is blessed only above these (metric names: components/
# retrieval_evaluator/metrics.py). Popularity scores hr_at_10 0.09 on ml-100k; a
# model below a third of that is broken, not merely weak.
DEFAULT_RETRIEVAL_THRESHOLDS = {"hr_at_10": 0.03, "hr_at_100": 0.2}

# Beam on one machine: measured on 2 cores for ml-100k (see README), in-process is faster
# than multi-process; multi-process pays off on larger data and more cores.
BEAM_IN_MEMORY = "in_memory"
BEAM_MULTI_PROCESSING = "multi_processing"
BEAM_MODES = (BEAM_IN_MEMORY, BEAM_MULTI_PROCESSING)

# Where a local run's executors run (pipeline/component_process.py). In the runner's process,
# what each component's TensorFlow, Beam and glibc keep stays resident for the rest of the
# run (peak 2.2 GiB at 100k ratings, 5.9 GiB at 1M); a child process per component returns
# it, for ~5-7 s of start-up each. "auto" picks child processes from a ratings file of
# CHILD_PROCESSES_FROM_BYTES (~400-500k ratings in any layout: 20-27 bytes a line), where
# the saved memory outgrows the ~1 minute of start-up; a size it cannot read counts as large.
EXECUTORS_AUTO = "auto"
EXECUTORS_CHILD_PROCESS = "child_process"
EXECUTORS_IN_PROCESS = "in_process"
EXECUTOR_MODES = (EXECUTORS_AUTO, EXECUTORS_CHILD_PROCESS, EXECUTORS_IN_PROCESS)
CHILD_PROCESSES_FROM_BYTES = 10_000_000

# The DirectRunner stages nothing, but TFX 1.16 builds an sdist of its own install directory
# for every Beam component whose arguments name no dependency (--setup_file, --extra_packages,
# ...): 2-3 s and 49 MB left in /tmp per component per run, and a copy that fails when another
# process writes a .pyc into that directory meanwhile. Naming this project's setup.py (what a
# remote runner would need anyway) skips it.
PROJECT_SETUP_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                  "setup.py")
BEAM_DEPENDENCY_FLAGS = ("--setup_file", "--extra_package", "--requirements_file",
                         "--sdk_container_image", "--worker_harness_container_image")


@dataclasses.dataclass
class PipelineConfig:
  """Everything a run needs. `data_dir` is a GroupLens MovieLens directory."""
  data_dir: str
  output_dir: str = dataclasses.field(
      default_factory=lambda: os.environ.get(ENV_OUTPUT_DIR, DEFAULT_OUTPUT_DIR))
  pipeline_name: str = DEFAULT_PIPELINE_NAME
  layout: Optional[str] = None  # None: detected from the files in data_dir
  # "last": each user's `eval_per_user` latest ratings are eval, the rest train (the
  # next-item protocol); "random": the seed tutorials' 80/20; "temporal": a global cutoff.
  split_method: str = "last"
  eval_per_user: int = 1
  train_fraction: float = 0.8  # random: share of ratings; temporal: time quantile
  split_seed: int = 42
  temporal_cutoff: int = 0  # unix seconds; 0 derives it from train_fraction
  skip_bad_rows: bool = False
  beam_mode: str = BEAM_IN_MEMORY
  beam_workers: int = 0  # multi_processing workers; 0 = one per core
  extra_beam_args: Tuple[str, ...] = ()  # e.g. --runner=DataflowRunner ...
  beam_setup_file: str = PROJECT_SETUP_FILE  # see PROJECT_SETUP_FILE
  enable_cache: bool = True
  executors: str = EXECUTORS_AUTO  # one of EXECUTOR_MODES (local runs)
  # Retrieval model: RetrievalHParams overrides, e.g. {"epochs": 5}.
  retrieval_hparams: Dict = dataclasses.field(default_factory=dict)
  retrieval_thresholds: Dict[str, float] = dataclasses.field(
      default_factory=lambda: dict(DEFAULT_RETRIEVAL_THRESHOLDS))
  max_regression: float = 0.01  # allowed drop of a thresholded metric vs the last blessed
  # Bless only a model that beats popularity (scored in the same execution) on HR@10 and
  # NDCG@10. Off only where too few users are evaluated to tell (a few dozen).
  retrieval_must_beat_popularity: bool = True
  index_min_recall: float = 0.95  # recall@10 against exact search
  # Catalogues smaller than this get brute-force search; None: scann_index's default.
  index_exact_below: Optional[int] = None
  # Ranking model: RankingHParams overrides; blessed when eval RMSE is below the bound and
  # at most `ranking_max_regression` above the last blessed ranking model's.
  ranking_hparams: Dict = dataclasses.field(default_factory=dict)
  # A broken-model gate, not a quality target: predicting every rating as the mean scores
  # the ratings' standard deviation, about 1.05-1.13 on the MovieLens releases. Held-out latest
  # ratings (split "last") are harder than random ones: 1.015 on ml-100k (0.898 random).
  ranking_rmse_bound: float = 1.1
  ranking_max_regression: float = 0.01
  # Serving orders by ranking score (the sequence scorer blended with retrieval) by
  # default only when the TwoStageEvaluator finds its NDCG@10 on the eval rows above
  # retrieval order's x (1 + this); otherwise by retrieval score, saying why.
  ranking_order_min_gain: float = 0.0
  # ... and not more than this (absolute NDCG@10) below the two-stage NDCG@10 of the last
  # ranking model whose order was blessed, its scorer ordering the same candidates.
  ranking_order_max_regression: float = 0.01
  # Whether the ratings carry user demographics; None reads it from the data files. Set it
  # when compiling for a cluster against data this machine cannot read (gs://...).
  user_demographics: Optional[bool] = None
  # Data arriving in spans: sub-directories of data_dir matching this pattern (e.g.
  # "span-{SPAN}"), each a GroupLens layout; ExampleGen reads the newest, Transform and the
  # Trainers train on the newest `rolling_spans` spans' Examples (resolved from MLMD).
  span_pattern: Optional[str] = None
  rolling_spans: int = 1
  # Both Trainers start from the weights of the last blessed model of their kind (found
  # in MLMD; embedding rows remapped by vocabulary key, see modules/warm_start.py).
  warm_start: bool = False
  # Where component executors read the curated schemas; None: this installation's
  # schemas/ package. The Kubeflow image has them at kubeflow.runner.IMAGE_SCHEMA_DIR.
  schema_dir: Optional[str] = None
  # A text-format ml_metadata ConnectionConfig (e.g. a shared MySQL store) instead of the
  # SQLite file under output_dir (see pipeline/metadata_store.py).
  metadata_connection_file: Optional[str] = None

  def __post_init__(self):
    RetrievalHParams.from_dict(self.retrieval_hparams)  # unknown keys fail here, not in the Trainer
    RankingHParams.from_dict(self.ranking_hparams)
    if self.rolling_spans < 1:
      raise ConfigError(f"rolling_spans must be at least 1, not {self.rolling_spans}")
    if "://" not in self.output_dir:  # executors may run elsewhere than the caller's cwd
      self.output_dir = os.path.abspath(self.output_dir)
    if self.beam_mode not in BEAM_MODES:
      raise ConfigError(f"beam_mode {self.beam_mode!r} is not one of {BEAM_MODES}.")
    if self.executors not in EXECUTOR_MODES:
      raise ConfigError(f"executors {self.executors!r} is not one of {EXECUTOR_MODES}.")
    if self.layout is None:
      self.layout = layouts.detect_layout(self.layout_dir).name
    elif self.layout not in layouts.LAYOUTS:
      raise ConfigError(f"layout {self.layout!r} is not one of {sorted(layouts.LAYOUTS)}.")

  @property
  def pipeline_root(self) -> str:
    return os.path.join(self.output_dir, "pipeline_root", self.pipeline_name)

  @property
  def metadata_path(self) -> str:
    return os.path.join(self.output_dir, "metadata", self.pipeline_name, "metadata.db")

  @property
  def serving_dir(self) -> str:
    return os.path.join(self.output_dir, "serving", self.pipeline_name)

  @property
  def log_dir(self) -> str:
    return os.path.join(self.output_dir, "logs")

  @property
  def has_demographics(self) -> bool:
    if self.user_demographics is not None:
      return self.user_demographics
    return layouts.LAYOUTS[self.layout].has_demographics(self.layout_dir)

  @property
  def layout_dir(self) -> str:
    """The directory whose files show the layout: data_dir, or its newest span."""
    if not self.span_pattern:
      return self.data_dir
    import glob  # pylint: disable=g-import-not-at-top
    import re  # pylint: disable=g-import-not-at-top
    number = re.compile("^" + re.escape(self.span_pattern).replace(r"\{SPAN\}", r"(\d+)") + "$")
    spans = []
    for path in glob.glob(os.path.join(self.data_dir, self.span_pattern.replace("{SPAN}", "*"))):
      match = number.match(os.path.basename(path))
      if match:
        spans.append((int(match.group(1)), path))
    if not spans:
      raise layouts.MovieLensDataError(
          f"no span directory matching {self.span_pattern!r} in {self.data_dir}")
    return max(spans)[1]

  def executors_in_child_processes(self) -> bool:
    """Whether a local run gives each executor its own process (see EXECUTOR_MODES)."""
    if self.executors != EXECUTORS_AUTO:
      return self.executors == EXECUTORS_CHILD_PROCESS
    layout = layouts.LAYOUTS[self.layout]
    ratings = layout.path(self.layout_dir, layout.ratings_file)
    try:
      return os.path.getsize(ratings) >= CHILD_PROCESSES_FROM_BYTES
    except OSError:  # remote or unreadable here: assume large
      return True

  def beam_pipeline_args(self) -> List[str]:
    """Beam options for every Beam-based component."""
    if any(arg.startswith("--runner") for arg in self.extra_beam_args):
      return list(self.extra_beam_args)  # Dataflow / Flink / Spark: no DirectRunner options
    named = any(arg.startswith(BEAM_DEPENDENCY_FLAGS) for arg in self.extra_beam_args)
    return direct_runner_args(self.beam_mode, self.beam_workers,
                              None if named else self.beam_setup_file) + list(self.extra_beam_args)


def direct_runner_args(beam_mode: str = BEAM_IN_MEMORY, workers: int = 0,
                       setup_file: Optional[str] = PROJECT_SETUP_FILE) -> List[str]:
  """Beam's DirectRunner in `beam_mode` (`workers` processes, 0: one per core), naming
  `setup_file` as the dependency (see PROJECT_SETUP_FILE; None: not named)."""
  if beam_mode == BEAM_MULTI_PROCESSING:
    args = ["--direct_running_mode=multi_processing",
            f"--direct_num_workers={workers or multiprocessing.cpu_count()}"]
  else:
    args = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
  return args + ([f"--setup_file={setup_file}"] if setup_file else [])
