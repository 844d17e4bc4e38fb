"""Compile the pipeline for Kubeflow Pipelines v2 / Vertex AI, and submit or schedule it.

The DAG is the one `pipeline.pipeline.create_pipeline` builds for local runs; only the
runner differs. User code is referenced by import path, so compiling needs no network and
uploads nothing: the container image (Dockerfile at the project root) imports it.

Requests are built as plain dicts first (`vertex_job_request`, `kfp_run_request`), so a
dry run prints exactly what would be sent, with no credentials and no network.
"""

import dataclasses
import json
import os
from typing import Dict, List, Optional, Tuple

from tfx import v1 as tfx

from components import blessing
from kubeflow import vertex
from modules.errors import ConfigError, MovrecError
from modules.hparams import RankingHParams, RetrievalHParams
from pipeline import pipeline as pipeline_lib
from pipeline.config import PipelineConfig

DEFAULT_IMAGE = "movrec-pipeline:latest"
BLESSING_RESOLVER_SUFFIX = "-model-blessing-resolver"  # the compiler's name for step one
IMAGE_SCHEMA_DIR = "/movrec/schemas"  # where the Dockerfile puts schemas/
IMAGE_SETUP_FILE = "/movrec/setup.py"  # and setup.py


class SubmitError(MovrecError, RuntimeError):
  """Submitting needs something that is missing (project, endpoint, credentials)."""


@dataclasses.dataclass
class ClusterTarget:
  """Where a compiled pipeline goes: Vertex AI (project + region) or a KFP endpoint."""
  project: Optional[str] = None
  region: str = "us-central1"
  kfp_host: Optional[str] = None
  service_account: Optional[str] = None
  experiment: str = "movrec"

  def validate(self) -> None:
    if not self.kfp_host and not self.project:
      raise SubmitError("give --project (Vertex AI Pipelines) or --kfp-host (a Kubeflow "
                        "Pipelines endpoint); neither was set")


def compile_pipeline(config: PipelineConfig, output_file: str, image: str = DEFAULT_IMAGE,
                     runtime_parameters: bool = True,
                     vertex_training: Optional[vertex.VertexTraining] = None,
                     dataflow: Optional[Tuple[str, str]] = None) -> Dict:
  """Writes the pipeline JSON to output_file; returns it as a dict.

  vertex_training: both Trainers run as Vertex AI Training jobs (their hyperparameters
  are then fixed at compile time: the `*_hparams` runtime parameters are not declared).
  dataflow: (project, region) to run every Beam step on Dataflow.
  """
  if config.rolling_spans > 1:
    raise ConfigError(
        f"rolling_spans={config.rolling_spans} needs TFX's SpanRangeStrategy resolver, which "
        "KubeflowV2DagRunner cannot compile (it compiles only the latest-artifact and "
        "latest-blessed-model resolvers). Compile with --rolling-spans 1: each scheduled run "
        "then trains on its newest span, and --warm-start carries what earlier spans taught.")
  if config.schema_dir is None:
    config = dataclasses.replace(config, schema_dir=IMAGE_SCHEMA_DIR)
  config = dataclasses.replace(config, beam_setup_file=IMAGE_SETUP_FILE)
  if dataflow:
    config = dataclasses.replace(config, extra_beam_args=tuple(config.extra_beam_args) + tuple(
        vertex.dataflow_beam_args(*dataflow, config.output_dir, image)))
  runtime = pipeline_lib.runtime_parameters(config) if runtime_parameters else None
  cloud_trainer = None
  if vertex_training:
    cloud_trainer = vertex_training.trainer_custom_config(image)
    runtime = {k: v for k, v in (runtime or {}).items() if not k.endswith("_hparams")}
  # Kubeflow components find MLMD through the cluster; no local connection config.
  tfx_pipeline = pipeline_lib.create_pipeline(config, runtime=runtime,
                                              trainer_cloud_config=cloud_trainer)
  output_dir = os.path.dirname(os.path.abspath(output_file))
  os.makedirs(output_dir, exist_ok=True)
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
      output_dir=output_dir, output_filename=os.path.basename(output_file))
  # The configuration's values become the parameters' defaults in runtimeConfig.
  defaults = {name: param.default for name, param in (runtime or {}).items()}
  runner.run(tfx_pipeline, parameter_values=defaults or None, write_out=True)
  with open(output_file) as f:
    compiled = json.load(f)
  scope_blessing_queries(compiled)
  with open(output_file, "w") as f:
    json.dump(compiled, f, indent=2, sort_keys=True)
  return compiled


def scope_blessing_queries(compiled: Dict) -> None:
  """Each latest-blessed-model resolver reads only the blessings of its kind of model.

  KubeflowV2DagRunner compiles the resolver's first step to "the newest blessed
  ModelBlessing in the store": with a retrieval, an index and a ranking blessing per run,
  the retrieval resolver could return the ranking model. Locally the resolver reads its
  evaluator's outputs only; this clause restores that on Kubeflow / Vertex.
  """
  executors = compiled["pipelineSpec"]["deploymentSpec"]["executors"]
  for node, kind in pipeline_lib.BLESSED_MODEL_KINDS.items():
    executor = executors.get(f"{node}{BLESSING_RESOLVER_SUFFIX}_executor")
    if executor is None:
      continue
    for query in executor["resolver"]["outputArtifactQueries"].values():
      query["filter"] += f' AND metadata.{blessing.MODEL_KIND_KEY}.string_value="{kind}"'


def parameter_values(overrides: Optional[Dict[str, str]] = None,
                     declared: Optional[List[str]] = None) -> Dict:
  """Runtime parameter values, typed as the pipeline declares them. `declared`: the
  parameters of the compiled spec (a --vertex-training spec has no `*_hparams`)."""
  values = {}
  known = sorted(declared if declared is not None else pipeline_lib.RUNTIME_PARAMETERS)
  for name, value in (overrides or {}).items():
    if name not in known:
      raise SubmitError(f"unknown runtime parameter {name!r}; known: {known}")
    ptype = pipeline_lib.RUNTIME_PARAMETERS[name][0]
    if isinstance(value, (dict, list)):  # the command line parsed a JSON value already
      value = json.dumps(value, sort_keys=True)
    try:
      values[name] = ptype(value)
    except ValueError as e:
      raise SubmitError(f"runtime parameter {name}={value!r} is not a {ptype.__name__}") from e
    if name in _JSON_PARAMETERS:
      _check_json_parameter(name, value, _JSON_PARAMETERS[name])
  return values


# Runtime parameters holding JSON objects, and what checks their keys before submitting.
_JSON_PARAMETERS = {
    "retrieval_thresholds": None,
    "retrieval_hparams": RetrievalHParams.from_dict,
    "ranking_hparams": RankingHParams.from_dict,
}


def _check_json_parameter(name: str, value: str, check) -> None:
  try:
    parsed = json.loads(value)
  except json.JSONDecodeError as e:
    raise SubmitError(f"runtime parameter {name} is not JSON ({e}): {value!r}") from e
  if not isinstance(parsed, dict):
    raise SubmitError(f"runtime parameter {name} must be a JSON object, not {value!r}")
  if check is not None:
    try:
      check(parsed)
    except (TypeError, ValueError) as e:
      raise SubmitError(f"runtime parameter {name}: {e}") from e


def vertex_job_request(compiled_file: str, pipeline_root: str, target: ClusterTarget,
                       values: Dict, cron: Optional[str] = None,
                       enable_caching: bool = True) -> Dict:
  """What `submit`/`schedule` send to Vertex AI (google.cloud.aiplatform.PipelineJob)."""
  with open(compiled_file) as f:
    spec = json.load(f)
  request = {
      "service": "Vertex AI Pipelines",
      "project": target.project, "location": target.region,
      "display_name": spec["pipelineSpec"]["pipelineInfo"]["name"],
      "template_path": os.path.abspath(compiled_file),
      "pipeline_root": pipeline_root,
      "parameter_values": values,
      "enable_caching": enable_caching,
      "service_account": target.service_account,
  }
  if cron:
    request["schedule"] = {"cron": cron, "display_name": f"{request['display_name']}-schedule"}
  return request


def kfp_run_request(compiled_file: str, target: ClusterTarget, values: Dict,
                    cron: Optional[str] = None, enable_caching: bool = True) -> Dict:
  """What `submit`/`schedule` send to a Kubeflow Pipelines endpoint (kfp.Client)."""
  with open(compiled_file) as f:
    name = json.load(f)["pipelineSpec"]["pipelineInfo"]["name"]
  request = {"service": "Kubeflow Pipelines", "host": target.kfp_host,
             "experiment": target.experiment, "run_name": name,
             "pipeline_package_path": os.path.abspath(compiled_file),
             "arguments": values, "enable_caching": enable_caching}
  if cron:
    request["recurring_run"] = {"cron_expression": cron, "job_name": f"{name}-recurring"}
  return request


def build_request(compiled_file: str, pipeline_root: str, target: ClusterTarget,
                  values: Dict, cron: Optional[str] = None) -> Dict:
  target.validate()
  if cron is not None:
    validate_cron(cron)
  if target.kfp_host:
    return kfp_run_request(compiled_file, target, values, cron)
  return vertex_job_request(compiled_file, pipeline_root, target, values, cron)


def validate_cron(cron: str) -> None:
  fields = cron.split()
  if len(fields) != 5:
    raise SubmitError(f"cron {cron!r} must have 5 fields (minute hour day month weekday), "
                      f"e.g. '0 3 * * 1'")


def send(request: Dict) -> str:
  """Submits (or schedules) for real. Returns the job / run name."""
  try:
    if request["service"] == "Kubeflow Pipelines":
      import kfp  # pylint: disable=g-import-not-at-top
      client = kfp.Client(host=request["host"])
      experiment = client.create_experiment(request["experiment"])
      if "recurring_run" in request:
        job = client.create_recurring_run(
            experiment_id=experiment.experiment_id,
            job_name=request["recurring_run"]["job_name"],
            cron_expression=request["recurring_run"]["cron_expression"],
            pipeline_package_path=request["pipeline_package_path"],
            params=request["arguments"], enable_caching=request["enable_caching"])
        return job.recurring_run_id
      run = client.create_run_from_pipeline_package(
          request["pipeline_package_path"], arguments=request["arguments"],
          run_name=request["run_name"], experiment_name=request["experiment"],
          enable_caching=request["enable_caching"])
      return run.run_id
    from google.cloud import aiplatform  # pylint: disable=g-import-not-at-top
    aiplatform.init(project=request["project"], location=request["location"])
    job = aiplatform.PipelineJob(
        display_name=request["display_name"], template_path=request["template_path"],
        pipeline_root=request["pipeline_root"], parameter_values=request["parameter_values"],
        enable_caching=request["enable_caching"])
    if "schedule" in request:
      schedule = job.create_schedule(cron=request["schedule"]["cron"],
                                     display_name=request["schedule"]["display_name"],
                                     service_account=request["service_account"])
      return schedule.resource_name
    job.submit(service_account=request["service_account"])
    return job.resource_name
  except Exception as e:  # pylint: disable=broad-except
    name = type(e).__name__
    if "Credentials" in name or "auth" in type(e).__module__:
      raise SubmitError(f"no usable Google Cloud credentials ({name}: {e}); run "
                        f"`gcloud auth application-default login` or set "
                        f"GOOGLE_APPLICATION_CREDENTIALS") from e
    raise SubmitError(f"{request['service']} refused the request: {name}: {e}") from e


def component_ids(compiled: Dict) -> List[str]:
  return sorted(compiled["pipelineSpec"]["root"]["dag"]["tasks"])
