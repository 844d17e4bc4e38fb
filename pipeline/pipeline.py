"""create_pipeline: the one DAG every runner (local, Kubeflow V2 / Vertex) uses.

  MovieLensExampleGen ─┬─ examples ── StatisticsGen ── ExampleValidator ─┐
                       │                  SchemaGen ─┘ (ratings)          ├─ ValidationGate
                       └─ candidates ─ CandidateStatisticsGen ─ Candidate─┘        │
                                          CandidateSchemaGen ─ ExampleValidator     │
  Transform(examples, schema)  ◀───────────────────── runs only after the gate ─────┘
      (examples: this run's span, or RollingSpanWindow's newest N spans from MLMD)
      │
      ├─ RetrievalTrainer ─┬─ RetrievalEvaluator (eval split × whole catalogue; vs the last
      │                    │      blessed model from LatestBlessedRetrievalModelResolver)
      │                    └─ IndexBuilder (ScaNN over the candidates; recall vs exact)
      ├─ RankingTrainer ─┬── RankingEvaluator (TFMA: RMSE bound, vs the last blessed one)
      │  (rating model + └── TwoStageEvaluator (with the RetrievalTrainer's model: the
      │   sequence scorer)       eval rows' candidates ordered by ranking score vs as
      │                          retrieved; blesses the ranking order; vs the last
      │                          blessed order, LatestBlessedRankingOrderResolver)
      └──────────────────── BundlePusher (query model + index + ranking model (+ TFLite),
                                          only when all three are blessed; the manifest
                                          records whether the ranking order is)
"""

import json
import os
from typing import Dict, Optional

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

import schemas
from components.bundle_pusher.component import BundlePusher
from components.curated_schema_gen.component import CuratedSchemaGen
from components.index_builder.component import IndexBuilder
from components.movielens_example_gen.component import MovieLensExampleGen
from components.retrieval_evaluator.component import RetrievalEvaluator
from components.two_stage_evaluator.component import TwoStageEvaluator
from components import blessing
from components import ranking_evaluator as ranking_evaluator_lib
from components.validation_gate.component import ValidationGate
from modules import features as F
import modules
from components import fingerprint
from modules import retrieval_trainer
from modules import ranking_trainer
from modules.hparams import FINGERPRINT_KEY, RankingHParams, RetrievalHParams
from pipeline import ranking_eval_config
from pipeline.config import PREPROCESSING_FN, RANKING_RUN_FN, RETRIEVAL_RUN_FN, PipelineConfig


# The latest-blessed-model resolvers, and the `model_kind` of the blessings each reads.
RETRIEVAL_RESOLVER = "LatestBlessedRetrievalModelResolver"
RANKING_RESOLVER = "LatestBlessedRankingModelResolver"
RANKING_ORDER_RESOLVER = "LatestBlessedRankingOrderResolver"
BLESSED_MODEL_KINDS = {RETRIEVAL_RESOLVER: blessing.RETRIEVAL, RANKING_RESOLVER: blessing.RANKING,
                       RANKING_ORDER_RESOLVER: blessing.RANKING_ORDER}

# Tunables a scheduler may change per run without recompiling (Kubeflow / Vertex runtime
# parameters): name -> (type, PipelineConfig attribute it overrides).
RUNTIME_PARAMETERS = {
    "data_dir": (str, "data_dir"),
    "retrieval_thresholds": (str, "retrieval_thresholds"),  # JSON {"metric": minimum}
    "retrieval_max_regression": (float, "max_regression"),
    "index_min_recall": (float, "index_min_recall"),
    # JSON hyperparameter overrides (modules/hparams.py), e.g. {"epochs": 5}; on Kubeflow
    # each becomes its Trainer's whole custom_config (see hparams.overrides_from).
    "retrieval_hparams": (str, "retrieval_hparams"),
    "ranking_hparams": (str, "ranking_hparams"),
}


def runtime_parameters(config: PipelineConfig) -> Dict[str, tfx.dsl.experimental.RuntimeParameter]:
  """RuntimeParameters for RUNTIME_PARAMETERS, defaulting to the values in `config`."""
  params = {}
  for name, (ptype, attribute) in RUNTIME_PARAMETERS.items():
    value = getattr(config, attribute)
    default = json.dumps(value, sort_keys=True) if isinstance(value, dict) else ptype(value)
    params[name] = tfx.dsl.experimental.RuntimeParameter(name=name, ptype=ptype,
                                                         default=default)
  return params


def create_pipeline(
    config: PipelineConfig,
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
    runtime: Optional[Dict[str, tfx.dsl.experimental.RuntimeParameter]] = None,
    trainer_cloud_config: Optional[Dict] = None,
) -> tfx.dsl.Pipeline:
  """The recommender's TFX pipeline for `config`.

  `runtime` (see runtime_parameters) replaces the matching configuration values with
  runtime parameters; the Kubeflow V2 runner compiles them as pipeline parameters.
  `trainer_cloud_config` (kubeflow/vertex.py) makes both Trainers TFX's Google Cloud
  Trainer, which runs the same run_fn as a Vertex AI Training job; their custom_config is
  then fixed at compile time.
  """
  runtime = runtime or {}
  example_gen = MovieLensExampleGen(
      input_base=runtime.get("data_dir", config.data_dir),
      layout=config.layout,
      split_method=config.split_method,
      train_fraction=config.train_fraction,
      split_seed=config.split_seed,
      temporal_cutoff=config.temporal_cutoff,
      eval_per_user=config.eval_per_user,
      skip_bad_rows=config.skip_bad_rows,
      span_pattern=config.span_pattern)

  # Ratings: statistics, the curated schema, validation.
  statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
  def curated_schema(name: str) -> CuratedSchemaGen:
    executor_path = (os.path.join(config.schema_dir, name, "schema.pbtxt")
                     if config.schema_dir else None)
    return CuratedSchemaGen(schemas.schema_path(name), executor_path)

  schema_gen = curated_schema(
      schemas.ratings_schema_name(config.has_demographics)).with_id("SchemaGen")
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])

  # Candidates (the movie catalogue): the same checks against their own schema.
  candidate_statistics_gen = tfx.components.StatisticsGen(
      examples=example_gen.outputs["candidates"]).with_id("CandidateStatisticsGen")
  candidate_schema_gen = curated_schema(schemas.MOVIES).with_id("CandidateSchemaGen")
  candidate_validator = tfx.components.ExampleValidator(
      statistics=candidate_statistics_gen.outputs["statistics"],
      schema=candidate_schema_gen.outputs["schema"]).with_id("CandidateExampleValidator")

  validation_gate = ValidationGate(
      ratings_anomalies=example_validator.outputs["anomalies"],
      candidate_anomalies=candidate_validator.outputs["anomalies"])

  # User code is referenced by import path (so Kubeflow compiles offline); its source
  # digest goes into custom_config so that editing it invalidates the cache.
  user_code = {FINGERPRINT_KEY: fingerprint.package_sha256(modules)}
  # Training data: the newest span, or a rolling window of the newest spans from MLMD.
  nodes_for_spans = []
  training_examples = example_gen.outputs["examples"]
  if config.rolling_spans > 1:
    window = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.SpanRangeStrategy,
        config={"range_config": tfx.proto.RangeConfig(
            rolling_range=tfx.proto.RollingRange(num_spans=config.rolling_spans))},
        examples=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples,
                                 producer_component_id=example_gen.id, output_key="examples"),
    ).with_id("RollingSpanWindow")
    window.add_upstream_node(validation_gate)  # after this run's span is written and checked
    training_examples = window.outputs["examples"]
    nodes_for_spans.append(window)
  transform = tfx.components.Transform(
      examples=training_examples,
      schema=schema_gen.outputs["schema"],
      preprocessing_fn=PREPROCESSING_FN,
      custom_config=user_code,
      splits_config=tfx.proto.SplitsConfig(
          analyze=[F.TRAIN_SPLIT], transform=[F.TRAIN_SPLIT, F.EVAL_SPLIT]),
      # Transform's own TFDV passes (pre-transform statistics, again; post-transform
      # statistics and anomalies) were a quarter of its time (67 -> 51 s at 100k ratings)
      # and nothing reads them: StatisticsGen and ExampleValidator check the raw data
      # before the gate.
      disable_statistics=True)
  transform.add_upstream_node(validation_gate)

  def trainer(node_id: str, run_fn: str, hparams_key: str, hparams: Dict, last_blessed):
    """A Trainer; with warm start, initialised from `last_blessed`'s model when there is
    one (modules/warm_start.py)."""
    custom_config = runtime.get(f"{hparams_key}_hparams",
                                {hparams_key: hparams, **user_code})
    trainer_class = tfx.components.Trainer
    if trainer_cloud_config:
      trainer_class = tfx.extensions.google_cloud_ai_platform.Trainer
      custom_config = {hparams_key: hparams, **user_code, **trainer_cloud_config}
    return trainer_class(
        run_fn=run_fn,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        base_model=last_blessed.outputs["model"] if config.warm_start else None,
        custom_config=custom_config,
    ).with_id(node_id)

  def latest_blessed(node_id: str, trainer_id: str, evaluator_id: str):
    """The newest model of `trainer_id` that `evaluator_id` blessed (from MLMD)."""
    return tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model,
                              producer_component_id=trainer_id),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing,
                                       producer_component_id=evaluator_id),
    ).with_id(node_id)

  # Stage one: two-tower retrieval, judged over the whole catalogue, indexed with ScaNN.
  latest_blessed_retrieval = latest_blessed(
      RETRIEVAL_RESOLVER, "RetrievalTrainer", "RetrievalEvaluator")
  retrieval_trainer_ = trainer(
      "RetrievalTrainer", RETRIEVAL_RUN_FN, retrieval_trainer.HPARAMS_KEY,
      RetrievalHParams.from_dict(config.retrieval_hparams).to_dict(), latest_blessed_retrieval)
  retrieval_evaluator = RetrievalEvaluator(
      model=retrieval_trainer_.outputs["model"],
      baseline_model=latest_blessed_retrieval.outputs["model"],
      examples=example_gen.outputs["examples"],
      candidates=example_gen.outputs["candidates"],
      thresholds=runtime.get("retrieval_thresholds", config.retrieval_thresholds),
      max_regression=runtime.get("retrieval_max_regression", config.max_regression),
      must_beat_popularity=config.retrieval_must_beat_popularity)
  index_builder = IndexBuilder(
      model=retrieval_trainer_.outputs["model"],
      candidates=example_gen.outputs["candidates"],
      examples=example_gen.outputs["examples"],
      transform_graph=transform.outputs["transform_graph"],
      min_recall=runtime.get("index_min_recall", config.index_min_recall),
      **({"exact_below": config.index_exact_below} if config.index_exact_below else {}))

  # Stage two: rating prediction, judged by TFX's Evaluator (TFMA).
  latest_blessed_ranking = latest_blessed(
      RANKING_RESOLVER, "RankingTrainer", "RankingEvaluator")
  ranking_trainer_ = trainer(
      "RankingTrainer", RANKING_RUN_FN, ranking_trainer.HPARAMS_KEY,
      RankingHParams.from_dict(config.ranking_hparams).to_dict(), latest_blessed_ranking)
  ranking_evaluator = tfx.components.Evaluator(
      examples=example_gen.outputs["examples"],
      model=ranking_trainer_.outputs["model"],
      baseline_model=latest_blessed_ranking.outputs["model"],
      eval_config=ranking_eval_config.eval_config(
          config.ranking_rmse_bound, config.ranking_max_regression, config.has_demographics),
      example_splits=[F.EVAL_SPLIT],
  ).with_id("RankingEvaluator")
  ranking_evaluator.executor_spec = ranking_evaluator_lib.EXECUTOR_SPEC.copy()
  # The last ranking model whose order the TwoStageEvaluator blessed: its baseline.
  latest_blessed_order = latest_blessed(
      RANKING_ORDER_RESOLVER, "RankingTrainer", "TwoStageEvaluator")
  two_stage_evaluator = TwoStageEvaluator(
      retrieval_model=retrieval_trainer_.outputs["model"],
      ranking_model=ranking_trainer_.outputs["model"],
      examples=example_gen.outputs["examples"],
      candidates=example_gen.outputs["candidates"],
      min_gain=config.ranking_order_min_gain,
      baseline_ranking_model=latest_blessed_order.outputs["model"],
      max_regression=config.ranking_order_max_regression)

  pusher = BundlePusher(
      model=retrieval_trainer_.outputs["model"],
      model_blessing=retrieval_evaluator.outputs["blessing"],
      index=index_builder.outputs["index"],
      index_blessing=index_builder.outputs["blessing"],
      ranking_model=ranking_trainer_.outputs["model"],
      ranking_blessing=ranking_evaluator.outputs["blessing"],
      order_blessing=two_stage_evaluator.outputs["blessing"],
      examples=training_examples,  # the users table covers every span the models learnt
      serving_dir=config.serving_dir)

  components = [
      example_gen, statistics_gen, schema_gen, example_validator,
      candidate_statistics_gen, candidate_schema_gen, candidate_validator,
      validation_gate, *nodes_for_spans, transform, retrieval_trainer_,
      latest_blessed_retrieval,
      retrieval_evaluator, index_builder, ranking_trainer_, latest_blessed_ranking,
      ranking_evaluator, latest_blessed_order, two_stage_evaluator, pusher,
  ]
  return tfx.dsl.Pipeline(
      pipeline_name=config.pipeline_name,
      pipeline_root=config.pipeline_root,
      components=components,
      enable_cache=config.enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=config.beam_pipeline_args())
