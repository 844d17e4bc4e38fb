"""The compiled Kubeflow spec executed end to end on this machine (`movrec run-compiled`):
every task's container command line, resolvers answered from a real MLMD store, the same
blessings as the LocalDagRunner, and a bundle `movrec recommend` serves."""
import io
import json
import os

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
def compiled_run(pipeline_config, tmp_path_factory):
  """The tests' pipeline (conftest's pipeline_config, as pushed_run's) compiled for a cluster
  (schemas read from the image's folder, mapped here), then run by the local launcher
  into its own SQLite store. Its own run, not pushed_run's: the worker that runs this
  file need not build that one too (conftest.PUSHED_RUN_GROUP)."""
  out = tmp_path_factory.mktemp("compiled")
  cluster_config = pipeline_config(out / "outputs")
  spec_path = str(out / "pipeline.json")
  runner.compile_pipeline(cluster_config, spec_path, image="movrec-pipeline:test")
  store = metadata_store.open_store(metadata_store.sqlite_config(str(out / "kfp.db")))
  console = io.StringIO()
  run = local_launcher.run_compiled(spec_path, store, out=console)
  return spec_path, cluster_config, store, run, console.getvalue()


@pytest.mark.e2e
def test_every_task_runs_and_blesses_as_the_local_runner_does(compiled_run):
  """The blessings test_pipeline_e2e asserts of the same configuration's local run."""
  spec_path, _, store, run, console = compiled_run
  spec = compiled_spec.load(spec_path)
  names = [t.name for t in compiled_spec.tasks_in_order(spec)]
  assert len(names) == 22 and set(run.outputs) == set(names)
  executions = store.get_executions()
  assert len(executions) == 22
  assert {e.last_known_state for e in executions} == {pb.Execution.COMPLETE}
  assert "[22/22] BundlePusher" in console and "RetrievalTrainer epoch" in console
  blessings = run.blessings()
  # The TwoStageEvaluator's decides the default order only; on 120 synthetic eval rows
  # it may go either way between two trainings, so only its presence is checked.
  assert "TwoStageEvaluator" in blessings
  gates = ("RetrievalEvaluator", "IndexBuilder", "RankingEvaluator")
  assert {n: blessings.get(n) for n in gates} == {n: True for n in gates}
  pushed = run.outputs["BundlePusher"]["pushed_model"][0]["metadata"]
  assert pushed["pushed"] == 1


@pytest.mark.e2e
def test_the_next_runs_resolvers_find_each_kind_of_blessed_model(compiled_run):
  """What the next scheduled run's six resolver tasks would answer: the retrieval
  resolver the retrieval model, the ranking resolver the ranking model, the ranking-order
  resolver the ranking model if its order was blessed (the compiled filters are scoped by
  `model_kind`; unscoped, all would take the newest blessing)."""
  spec_path, _, store, run, _ = compiled_run
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
  # Unscoped (as TFX compiles it), both resolvers would take the newest blessed
  # ModelBlessing, whatever its kind; the run wrote both kinds, so one resolver would be
  # given the other kind's model.
  blessed = records.query('schema_title="tfx.ModelBlessing" AND state=LIVE AND '
                          'metadata.blessed.number_value=1', limit=10)
  assert {"retrieval", "ranking"} <= {b["metadata"]["model_kind"] for b in blessed}


@pytest.mark.e2e
def test_the_pushed_bundle_is_served(compiled_run, capsys):
  _, cluster_config, _, _, _ = compiled_run
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


# A container that stamps when it ran (in its task folder, its working directory), sleeps,
# then writes the ExecutorOutput the launcher reads; exits 3 if told to.
_STAMPING_TASK = """import json, sys, time
started = time.time()
time.sleep(float(sys.argv[1]))
if sys.argv[2] == "fail":
  sys.exit(3)
open("ran", "w").write(f"{started} {time.time()}")
json.dump({}, open(json.loads(sys.argv[3])["outputs"]["outputFile"], "w"))
"""


def _spec_file(tmp_path, tasks):
  """A compiled spec of container tasks {name: (seconds, "ok" | "fail", depends on)}."""
  dag, components, executors = {}, {}, {}
  for name, (seconds, outcome, depends_on) in tasks.items():
    dag[name] = {"componentRef": {"name": name}, "dependentTasks": list(depends_on)}
    components[name] = {"executorLabel": f"{name}_executor"}
    executors[f"{name}_executor"] = {"container": {
        "image": "x", "command": ["python", "-c", _STAMPING_TASK],
        "args": [str(seconds), outcome, compiled_spec.EXECUTOR_INPUT_PLACEHOLDER]}}
  root = tmp_path / "root"
  path = tmp_path / "spec.json"
  path.write_text(json.dumps({"pipelineSpec": {
      "pipelineInfo": {"name": "p"}, "root": {"dag": {"tasks": dag}},
      "components": components, "deploymentSpec": {"executors": executors}},
      "runtimeConfig": {"gcsOutputDirectory": str(root)}}))
  return str(path)


def _ran(run_root, task):
  """(start, end) of a task's container, or None if it never got to its end."""
  path = os.path.join(run_root, task, "ran")
  return tuple(map(float, open(path).read().split())) if os.path.exists(path) else None


def _states(store):
  return {e.custom_properties[kfp_store.TASK_NAME].string_value: e.last_known_state
          for e in store.get_executions()}


@pytest.mark.parametrize("parallel", [1, 2])
def test_ready_tasks_run_at_once_and_a_task_starts_after_its_inputs(tmp_path, parallel):
  """As on KFP: two independent tasks overlap (unless --parallel 1), and a task that
  depends on both starts only after both ended."""
  path = _spec_file(tmp_path, {"A": (3, "ok", []), "B": (3, "ok", []),
                               "C": (0, "ok", ["A", "B"])})
  store = metadata_store.open_store(metadata_store.sqlite_config(str(tmp_path / "m.db")))
  run = local_launcher.run_compiled(path, store, out=io.StringIO(), parallel=parallel)
  (a_start, a_end), (b_start, b_end) = _ran(run.run_root, "A"), _ran(run.run_root, "B")
  overlapped = a_start < b_end and b_start < a_end
  assert overlapped == (parallel == 2)
  assert _ran(run.run_root, "C")[0] >= max(a_end, b_end)
  assert _states(store) == {name: pb.Execution.COMPLETE for name in "ABC"}


def test_after_a_failure_no_task_starts_and_the_running_ones_finish(tmp_path):
  """Broken fails while Slow runs: Slow finishes and is recorded, After (which needs
  Slow) never starts, and the run raises Broken's failure."""
  path = _spec_file(tmp_path, {"Broken": (0, "fail", []), "Slow": (2, "ok", []),
                               "After": (0, "ok", ["Slow"])})
  store = metadata_store.open_store(metadata_store.sqlite_config(str(tmp_path / "m.db")))
  with pytest.raises(local_launcher.TaskFailedError, match="task Broken exited with code 3"):
    local_launcher.run_compiled(path, store, out=io.StringIO(), parallel=2)
  assert _states(store) == {"Broken": pb.Execution.FAILED, "Slow": pb.Execution.COMPLETE}
  (run_root,) = [str(p) for p in (tmp_path / "root").iterdir()]
  assert _ran(run_root, "Slow") is not None and not os.path.exists(
      os.path.join(run_root, "After"))
