"""Executors in child processes (pipeline/component_process.py), with real processes.

The whole pipeline in this mode runs in test_killed_run.py (a run killed during a Trainer,
then a run that pushes) and test_pipeline_e2e.py (an ExampleGen error raised in its process).
Here: what comes back from the child, and that a silent child dies with its parent.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

# Executors the child imports by path: written to a folder on PYTHONPATH (a `tests`
# package in site-packages shadows this folder for `python -m`).
EXECUTORS = textwrap.dedent('''
    import os, time
    from tfx.dsl.components.base import base_executor

    class StampExecutor(base_executor.BaseExecutor):
      """Marks its output artifact with its pid, as a blessing would be marked."""
      def Do(self, input_dict, output_dict, exec_properties):
        artifact = output_dict["out"][0]
        artifact.set_int_custom_property("pid", os.getpid())
        artifact.set_string_custom_property("said", exec_properties["say"])

    class SilentSleepExecutor(base_executor.BaseExecutor):
      """Writes nothing while it runs (nothing would fail on a closed pipe)."""
      def Do(self, input_dict, output_dict, exec_properties):
        time.sleep(600)
''')

RUN_ONE = textwrap.dedent('''
    import json, os, sys
    from tfx.orchestration.portable import data_types
    from tfx.proto.orchestration import executable_spec_pb2
    from tfx.types import standard_artifacts
    from pipeline.component_process import ChildProcessExecutorOperator

    class_path, work_dir = sys.argv[1], sys.argv[2]
    out = standard_artifacts.Examples()
    out.uri = work_dir + "/out"
    info = data_types.ExecutionInfo(
        execution_id=1, output_dict={"out": [out]}, exec_properties={"say": "hello"},
        execution_output_uri=work_dir + "/executor_output.pb", tmp_dir=work_dir + "/tmp/",
        stateful_working_dir=work_dir + "/state")
    operator = ChildProcessExecutorOperator(
        executable_spec_pb2.PythonClassExecutableSpec(class_path=class_path))
    result = operator.run_executor(info)
    artifact = result.output_artifacts["out"].artifacts[0]
    values = {key: str(value) for key, value in artifact.custom_properties.items()}
    print(json.dumps(dict(values, runner=os.getpid())))
''')


@pytest.fixture()
def executors_on_path(tmp_path):
  (tmp_path / "movrec_test_executors.py").write_text(EXECUTORS)
  return dict(os.environ, PYTHONPATH=str(tmp_path), TF_USE_LEGACY_KERAS="1")


def test_what_the_child_sets_on_its_outputs_comes_back(tmp_path, executors_on_path):
  done = subprocess.run(
      [sys.executable, "-c", RUN_ONE, "movrec_test_executors.StampExecutor", str(tmp_path)],
      env=executors_on_path, capture_output=True, text=True, timeout=300, check=True)
  properties = json.loads(done.stdout.strip().splitlines()[-1])
  assert "hello" in properties["said"]  # exec_properties reached the child
  child_pid = int(properties["pid"].split(":")[1])  # 'int_value: 1234'
  assert child_pid != properties["runner"]


def test_a_silent_child_dies_with_its_killed_parent(tmp_path, executors_on_path):
  log = open(tmp_path / "parent.log", "wb")  # pylint: disable=consider-using-with
  parent = subprocess.Popen(
      [sys.executable, "-c", RUN_ONE, "movrec_test_executors.SilentSleepExecutor",
       str(tmp_path)],
      env=executors_on_path, stdout=subprocess.DEVNULL, stderr=log,
      start_new_session=True)
  try:
    deadline = time.monotonic() + 120
    children = []
    while not children:  # the executor's child, not a short-lived one of an import's
      assert parent.poll() is None and time.monotonic() < deadline, "no child started"
      children = [child for child in psutil.Process(parent.pid).children()
                  if "pipeline.component_process" in _command_line(child)]
      time.sleep(0.2)
    time.sleep(8)  # the child is inside Do (imports take ~5 s), writing nothing
    assert children[0].is_running(), (
        "the executor's child ended on its own:\n"
        + (tmp_path / "parent.log").read_text(errors="replace")[-3000:])
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert gone and not alive, "the child outlived its killed parent"
  finally:
    try:
      os.killpg(parent.pid, signal.SIGKILL)  # the child too, if the test failed
    except ProcessLookupError:
      pass
    log.close()


def _command_line(process) -> str:
  try:
    return " ".join(process.cmdline())
  except psutil.Error:  # it ended while we looked
    return ""


def test_executors_do_not_read_the_callers_command_line(monkeypatch):
  """A Beam executor parses sys.argv with absl: pytest's `-v tests` is --verbosity=tests."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from tfx.components.statistics_gen import executor as statistics_gen  # pylint: disable=g-import-not-at-top
  from pipeline.component_process import arguments_hidden_from_executors  # pylint: disable=g-import-not-at-top

  def make_beam_executor():
    return statistics_gen.Executor(statistics_gen.Executor.Context(
        beam_pipeline_args=["--runner=DirectRunner"]))

  caller = ["pytest", "-v", "tests"]
  monkeypatch.setattr(sys, "argv", list(caller))
  with pytest.raises(flags.IllegalFlagValueError, match="verbosity=tests"):
    make_beam_executor()
  with arguments_hidden_from_executors():
    make_beam_executor()
  assert sys.argv == caller  # given back to the caller
