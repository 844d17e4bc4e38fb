"""The compiled Kubeflow spec executed end to end on this machine (`movrec run-compiled`):
every task's container command line, resolvers answered from a real MLMD store, the same
blessings as the LocalDagRunner, and a bundle `movrec recommend` serves."""
import dataclasses
import io
import json

import pytest
from ml_metadata.proto import metadata_store_pb2 as pb

from kubeflow import compiled_spec
from kubeflow import kfp_store
from kubeflow import local_launcher
from kubeflow import runner
from movrec import main as cli
from pipeline import metadata_store
from pipeline import pipeline as pipeline_lib


@pytest.fixture(scope="module")
def compiled_run(pushed_run, tmp_path_factory):
  """The pushed run's configuration compiled for a cluster (schemas read from the image's
  folder, mapped here), then run by the local launcher into its own SQLite store."""
  config, local_run, _ = pushed_run
  out = tmp_path_factory.mktemp("compiled")
  cluster_config = dataclasses.replace(config, output_dir=str(out / "outputs"))
  spec_path = str(out / "pipeline.json")
  runner.compile_pipeline(cluster_config, spec_path, image="movrec-pipeline:test")
  store = metadata_store.open_store(metadata_store.sqlite_config(str(out / "kfp.db")))
  console = io.StringIO()
  run = local_launcher.run_compiled(spec_path, store, out=console)
  return spec_path, cluster_config, store, run, local_run, console.getvalue()


@pytest.mark.e2e
def test_every_task_runs_and_blesses_as_the_local_runner_does(compiled_run):
  spec_path, _, store, run, local_run, console = compiled_run
  spec = compiled_spec.load(spec_path)
  names = [t.name for t in compiled_spec.tasks_in_order(spec)]
  assert len(names) == 22 and set(run.outputs) == set(names)
  executions = store.get_executions()
  assert len(executions) == 22
  assert {e.last_known_state for e in executions} == {pb.Execution.COMPLETE}
  assert "[22/22] BundlePusher" in console and "RetrievalTrainer epoch" in console
  local = {node: bool(local_run.output(node, "blessing").custom_properties["blessed"].int_value)
           for node in ("RetrievalEvaluator", "IndexBuilder", "RankingEvaluator")}
  blessings = run.blessings()
  # The TwoStageEvaluator's decides the default order only; on 120 synthetic eval rows
  # it may go either way between two trainings, so only its presence is compared.
  assert "TwoStageEvaluator" in blessings
  assert {n: b for n, b in blessings.items() if n in local} == local == {n: True for n in local}
  pushed = run.outputs["BundlePusher"]["pushed_model"][0]["metadata"]
  assert pushed["pushed"] == 1


@pytest.mark.e2e
def test_the_next_runs_resolvers_find_each_kind_of_blessed_model(compiled_run):
  """What the next scheduled run's six resolver tasks would answer: the retrieval
  resolver the retrieval model, the ranking resolver the ranking model, the ranking-order
  resolver the ranking model if its order was blessed (the compiled filters are scoped by
  `model_kind`; unscoped, all would take the newest blessing)."""
  spec_path, _, store, run, _, _ = compiled_run
  spec = compiled_spec.load(spec_path)
  records = kfp_store.KfpStore(store, compiled_spec.pipeline_name(spec), "next-run")
  resolved = local_launcher.run_resolvers(spec, records)
  for resolver, trainer in ((pipeline_lib.RETRIEVAL_RESOLVER, "RetrievalTrainer"),
                            (pipeline_lib.RANKING_RESOLVER, "RankingTrainer")):
    model = resolved[f"{resolver}-model-resolver"]["model"]
    assert [m["uri"] for m in model] == [run.outputs[trainer]["model"][0]["uri"]], resolver
  order = resolved[f"{pipeline_lib.RANKING_ORDER_RESOLVER}-model-resolver"]["model"]
  order_blessed = run.blessings()["TwoStageEvaluator"]
  assert [m["uri"] for m in order] == (
      [run.outputs["RankingTrainer"]["model"][0]["uri"]] if order_blessed else [])
  # Unscoped (as TFX compiles it), both resolvers take the newest blessed ModelBlessing:
  # here the RetrievalEvaluator's (it ran last), which the ranking resolver would be given.
  newest = records.query('schema_title="tfx.ModelBlessing" AND state=LIVE AND '
                         'metadata.blessed.number_value=1')
  assert newest[0]["metadata"]["model_kind"] == "retrieval"


@pytest.mark.e2e
def test_the_pushed_bundle_is_served(compiled_run, capsys):
  _, cluster_config, _, _, _, _ = compiled_run
  assert cli.main(["recommend", "--output-dir", cluster_config.output_dir,
                   "--user", "1", "-k", "5", "--json"]) == 0
  answer = json.loads(capsys.readouterr().out)
  assert answer["path"] == "personalized" and len(answer["items"]) == 5


def test_a_failing_task_names_itself_and_its_log(tmp_path, capsys):
  """Through `movrec run-compiled`: the task, its exit code, its log; recorded FAILED in
  the store the command creates in the pipeline root."""
  spec = {"pipelineInfo": {"name": "p"}, "root": {"dag": {"tasks": {"Broken": {
      "componentRef": {"name": "Broken"}}}}},
          "components": {"Broken": {"executorLabel": "Broken_executor"}},
          "deploymentSpec": {"executors": {"Broken_executor": {"container": {
              "image": "x", "command": ["python", "-c", "import sys; print('boom'); "
                                        "sys.exit(3)"], "args": []}}}}}
  path = tmp_path / "p.json"
  root = tmp_path / "root"
  path.write_text(json.dumps({"pipelineSpec": spec, "runtimeConfig": {
      "gcsOutputDirectory": str(root)}}))
  # Parameters are checked before anything runs: this spec declares none.
  assert cli.main(["run-compiled", str(path), "--param", "index_min_recall=0.9"]) == 1
  assert "unknown runtime parameter 'index_min_recall'" in capsys.readouterr().err
  assert not (root / local_launcher.DEFAULT_METADATA).exists()
  assert cli.main(["run-compiled", str(path)]) == 1
  error = capsys.readouterr().err
  assert "task Broken exited with code 3" in error
  assert "boom" in error and "task.log" in error
  store = metadata_store.open_store(metadata_store.sqlite_config(
      str(root / local_launcher.DEFAULT_METADATA)))
  assert [e.last_known_state for e in store.get_executions()] == [pb.Execution.FAILED]
