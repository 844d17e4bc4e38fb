"""Kubeflow Pipelines v2 / Vertex AI: compile the whole pipeline, dry-run submit/schedule,
and run one compiled component's container command line locally."""
import json
import os
import subprocess
import sys

import pytest

import schemas
from kubeflow import runner
from movrec import main as cli
from modules.hparams import RankingHParams
from pipeline.config import PipelineConfig
from pipeline.pipeline import RUNTIME_PARAMETERS

IMAGE = "us-docker.pkg.dev/my-project/movrec/pipeline:1.0"
COMPONENTS = {"MovieLensExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator",
              "CandidateStatisticsGen", "CandidateSchemaGen", "CandidateExampleValidator",
              "ValidationGate", "Transform", "RetrievalTrainer", "RetrievalEvaluator",
              "IndexBuilder", "RankingTrainer", "RankingEvaluator", "TwoStageEvaluator",
              "BundlePusher"}


def remote_config(**overrides):
  """A cluster configuration: data and outputs on GCS (never read at compile time)."""
  return PipelineConfig(data_dir="gs://my-bucket/ml-100k", output_dir="gs://my-bucket/movrec",
                        layout="ml-100k", user_demographics=True, **overrides)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("kfp") / "pipeline.json")
  spec = runner.compile_pipeline(
      remote_config(extra_beam_args=("--runner=DataflowRunner", "--project=my-project",
                                     "--region=europe-west4"),
                    retrieval_hparams={"epochs": 7}, warm_start=True), path, image=IMAGE)
  return path, spec


def tasks(spec):
  return spec["pipelineSpec"]["root"]["dag"]["tasks"]


def test_every_component_is_compiled_with_the_image(compiled):
  _, spec = compiled
  names = set(tasks(spec))
  assert COMPONENTS <= names
  resolvers = names - COMPONENTS  # each Resolver compiles to a model and a blessing step
  assert len(resolvers) == 6 and all("Resolver" in name for name in resolvers)
  executors = spec["pipelineSpec"]["deploymentSpec"]["executors"]
  containers = [e["container"] for e in executors.values() if "container" in e]
  assert len(containers) >= len(COMPONENTS)
  assert {c["image"] for c in containers} == {IMAGE}


def test_dependencies_follow_the_dag(compiled):
  _, spec = compiled
  deps = {name: set(task.get("dependentTasks", [])) for name, task in tasks(spec).items()}
  assert "ValidationGate" in deps["Transform"]  # bad data never reaches training
  assert {"Transform"} <= deps["RetrievalTrainer"] and {"Transform"} <= deps["RankingTrainer"]
  assert {"RetrievalTrainer", "MovieLensExampleGen"} <= deps["RetrievalEvaluator"]
  assert any("RetrievalModelResolver" in d for d in deps["RetrievalEvaluator"])
  assert any("RankingModelResolver" in d for d in deps["RankingEvaluator"])
  assert {"RetrievalTrainer", "Transform", "MovieLensExampleGen"} <= deps["IndexBuilder"]
  assert {"RetrievalTrainer", "RankingTrainer"} <= deps["TwoStageEvaluator"]
  assert any("RankingOrderResolver" in d for d in deps["TwoStageEvaluator"])
  assert {"RetrievalEvaluator", "IndexBuilder", "RankingEvaluator",
          "TwoStageEvaluator"} <= deps["BundlePusher"]
  # Warm start: each Trainer reads the last blessed model of its kind.
  assert any("RetrievalModelResolver" in d for d in deps["RetrievalTrainer"])
  assert any("RankingModelResolver" in d for d in deps["RankingTrainer"])


def test_runtime_parameters_and_beam_args(compiled):
  _, spec = compiled
  declared = spec["pipelineSpec"]["root"]["inputDefinitions"]["parameters"]
  assert set(declared) == set(RUNTIME_PARAMETERS)
  assert declared["index_min_recall"]["type"] == "DOUBLE"
  defaults = spec["runtimeConfig"]["parameters"]  # pipeline spec 2.0: typed Values
  assert defaults["data_dir"]["stringValue"] == "gs://my-bucket/ml-100k"
  assert defaults["index_min_recall"]["doubleValue"] == 0.95
  assert json.loads(defaults["retrieval_thresholds"]["stringValue"])["hr_at_10"] > 0
  assert json.loads(defaults["retrieval_hparams"]["stringValue"]) == {"epochs": 7}
  for trainer, parameter in (("RetrievalTrainer", "retrieval_hparams"),
                             ("RankingTrainer", "ranking_hparams")):
    custom_config = tasks(spec)[trainer]["inputs"]["parameters"]["custom_config"]
    assert custom_config == {"componentInputParameter": parameter}
  assert spec["runtimeConfig"]["gcsOutputDirectory"] == (
      "gs://my-bucket/movrec/pipeline_root/movielens-recommender")
  executors = spec["pipelineSpec"]["deploymentSpec"]["executors"]
  transform = next(e for name, e in executors.items() if name.startswith("Transform"))
  args = transform["container"]["args"]
  assert "--runner=DataflowRunner" in args
  assert not any(a.startswith("--direct_running_mode") for a in args)


def test_submit_and_schedule_dry_runs_print_the_request(compiled, capsys):
  path, _ = compiled
  assert cli.main(["submit", "--compiled", path, "--project", "my-project", "--region",
                   "europe-west4", "--param", "index_min_recall=0.9",
                   "--param", 'retrieval_hparams={"epochs": 3}', "--dry-run"]) == 0
  request = json.loads(capsys.readouterr().out)
  assert request["service"] == "Vertex AI Pipelines"
  assert request["project"] == "my-project" and request["location"] == "europe-west4"
  assert request["parameter_values"] == {"index_min_recall": 0.9,
                                         "retrieval_hparams": '{"epochs": 3}'}
  assert request["pipeline_root"].startswith("gs://my-bucket/")
  assert "schedule" not in request

  assert cli.main(["schedule", "--compiled", path, "--kfp-host", "http://kfp.example:8080",
                   "--cron", "0 3 * * 1", "--param", "data_dir=gs://my-bucket/ml-1m",
                   "--dry-run"]) == 0
  request = json.loads(capsys.readouterr().out)
  assert request["service"] == "Kubeflow Pipelines"
  assert request["recurring_run"]["cron_expression"] == "0 3 * * 1"
  assert request["arguments"] == {"data_dir": "gs://my-bucket/ml-1m"}


def test_a_rolling_span_window_is_refused_at_compile_time_with_the_alternative(
    tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert cli.main(["compile", "--data-dir", "gs://b/ml-100k", "--output-dir", "gs://b/out",
                   "--layout", "ml-100k", "--demographics", "--span-pattern", "span-{SPAN}",
                   "--rolling-spans", "3", "--image", IMAGE,
                   "--output", str(tmp_path / "p.json")]) == 1
  error = capsys.readouterr().err
  assert "SpanRangeStrategy" in error and "--rolling-spans 1" in error
  assert not (tmp_path / "p.json").exists()
  assert not (tmp_path / "gs:").exists()  # no local directory named after the bucket


@pytest.mark.parametrize("argv,message", [
    (["submit", "--dry-run"], "give --project"),
    (["submit", "--project", "p", "--param", "epochs=3", "--dry-run"], "unknown runtime parameter"),
    (["submit", "--project", "p", "--param", "index_min_recall=high", "--dry-run"], "not a float"),
    (["submit", "--project", "p", "--param", 'ranking_hparams={"epoch": 3}', "--dry-run"],
     "unknown RankingHParams keys"),
    (["submit", "--project", "p", "--param", "retrieval_thresholds=[0.1]", "--dry-run"],
     "must be a JSON object"),
    (["schedule", "--project", "p", "--cron", "daily", "--dry-run"], "5 fields"),
])
def test_bad_submissions_get_a_clear_error(compiled, capsys, argv, message):
  path, _ = compiled
  assert cli.main(argv[:1] + ["--compiled", path] + argv[1:]) == 1
  assert message in capsys.readouterr().err


def test_a_compiled_component_runs_from_its_container_command_line(tmp_path):
  """CandidateSchemaGen's command and args from the JSON, with the ExecutorInput a KFP
  launcher would pass; schemas are read from this checkout instead of the image."""
  local = remote_config(schema_dir=os.path.dirname(schemas.__file__))
  spec = runner.compile_pipeline(local, str(tmp_path / "pipeline.json"), image=IMAGE)
  task = tasks(spec)["CandidateSchemaGen"]
  executor = spec["pipelineSpec"]["deploymentSpec"]["executors"][
      spec["pipelineSpec"]["components"][task["componentRef"]["name"]]["executorLabel"]]
  parameters = {name: {"stringValue": p["runtimeValue"]["constantValue"]["stringValue"]}
                for name, p in task["inputs"]["parameters"].items()}
  out = tmp_path / "task"
  executor_input = {
      "inputs": {"parameters": parameters},
      "outputs": {"artifacts": {"schema": {"artifacts": [{
          "name": "schema", "type": {"schemaTitle": "tfx.Schema"},
          "uri": str(out / "schema"), "metadata": {}}]}},
                  "outputFile": str(out / "executor_output.json")}}
  container = executor["container"]
  command = [sys.executable if c == "python" else c for c in container["command"]]
  args = [json.dumps(executor_input) if a == "{{$}}" else a for a in container["args"]]
  done = subprocess.run(command + args, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
  assert done.returncode == 0, done.stderr[-2000:]
  with open(out / "schema" / "schema.pbtxt") as f:
    assert f.read() == open(schemas.schema_path(schemas.MOVIES)).read()
  assert json.load(open(out / "executor_output.json"))["artifacts"]["schema"]


@pytest.fixture(scope="module")
def vertex_compiled(tmp_path_factory):
  from kubeflow import vertex  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp("kfp-vertex") / "pipeline.json")
  training = vertex.VertexTraining("my-project", "europe-west4", machine_type="n1-highmem-8",
                                   accelerator="NVIDIA_TESLA_T4:2")
  spec = runner.compile_pipeline(remote_config(retrieval_hparams={"epochs": 7}), path,
                                 image=IMAGE, vertex_training=training,
                                 dataflow=("my-project", "europe-west4"))
  return path, spec


def test_vertex_training_and_dataflow_are_compiled_into_the_job_specs(vertex_compiled):
  """Both Trainers submit a Vertex CustomJob (built here by TFX's own Vertex client, as its
  executor would build it, without sending it); every Beam step runs on Dataflow."""
  from tfx.extensions.google_cloud_ai_platform import training_clients  # pylint: disable=g-import-not-at-top
  _, spec = vertex_compiled
  executors = spec["pipelineSpec"]["deploymentSpec"]["executors"]
  declared = spec["pipelineSpec"]["root"]["inputDefinitions"]["parameters"]
  assert not any(name.endswith("_hparams") for name in declared)  # fixed at compile time
  for trainer, run_fn, key in (("RetrievalTrainer", "modules.retrieval_trainer.run_fn",
                                "retrieval"),
                               ("RankingTrainer", "modules.ranking_trainer.run_fn", "ranking")):
    args = executors[f"{trainer}_executor"]["container"]["args"]
    assert args[1] == "tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor"
    parameters = {name: p["runtimeValue"]["constantValue"]["stringValue"]
                  for name, p in tasks(spec)[trainer]["inputs"]["parameters"].items()}
    custom_config = json.loads(parameters["custom_config"])
    assert custom_config["ai_platform_enable_vertex"] is True
    assert custom_config["ai_platform_vertex_region"] == "europe-west4"
    assert custom_config[key]["epochs"] == (7 if key == "retrieval" else RankingHParams().epochs)

    client = training_clients.VertexJobClient.__new__(training_clients.VertexJobClient)
    job_args = json.loads(json.dumps(custom_config["ai_platform_training_args"]))
    assert job_args.pop("project") == "my-project"  # what TFX's runner takes out first
    job = client.create_training_job({}, {}, parameters,
                                     "tfx.components.trainer.executor.GenericExecutor",
                                     job_args, None, None)
    (pool,) = job["job_spec"]["worker_pool_specs"]
    assert pool["machine_spec"] == {"machine_type": "n1-highmem-8",
                                    "accelerator_type": "NVIDIA_TESLA_T4",
                                    "accelerator_count": 2}
    assert pool["container_spec"]["image_uri"] == IMAGE
    command = pool["container_spec"]["command"]
    assert command[:3] == ["python", "-m", "tfx.scripts.run_executor"]
    assert command[command.index("--executor_class_path") + 1] == (
        "tfx.components.trainer.executor.GenericExecutor")
    assert json.loads(command[command.index("--exec-properties") + 1])["run_fn"] == run_fn

  beam_steps = [name for name, e in executors.items()
                if "--runner=DataflowRunner" in e.get("container", {}).get("args", [])]
  assert {"Transform_executor", "StatisticsGen_executor", "MovieLensExampleGen_executor",
          "RankingEvaluator_executor", "RetrievalEvaluator_executor",
          "IndexBuilder_executor"} <= set(beam_steps)
  transform = executors["Transform_executor"]["container"]["args"]
  assert f"--sdk_container_image={IMAGE}" in transform
  assert "--temp_location=gs://my-bucket/movrec/beam-temp" in transform
  assert not any(a.startswith("--direct_") for a in transform)


def test_a_vertex_spec_refuses_the_hparams_parameters_it_does_not_declare(
    vertex_compiled, capsys):
  path, _ = vertex_compiled
  assert cli.main(["submit", "--compiled", path, "--project", "p", "--param",
                   'retrieval_hparams={"epochs": 3}', "--dry-run"]) == 1
  assert "unknown runtime parameter 'retrieval_hparams'" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--dataflow", "--project", "p"], "Dataflow needs a gs:// --output-dir"),
    (["--vertex-training"], "Vertex AI Training needs --project"),
    (["--vertex-training", "--project", "p", "--training-accelerator", "T4:two"],
     "expected TYPE or TYPE:COUNT"),
])
def test_bad_cloud_compile_options_get_a_clear_error(tmp_path, capsys, extra, message):
  output_dir = "gs://b/out" if "--dataflow" not in extra else str(tmp_path / "out")
  assert cli.main(["compile", "--data-dir", "gs://b/ml-100k", "--output-dir", output_dir,
                   "--layout", "ml-100k", "--demographics", "--image", IMAGE,
                   "--output", str(tmp_path / "p.json"), *extra]) == 1
  assert message in capsys.readouterr().err
