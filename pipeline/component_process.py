"""Each component's executor in a child process of the local run, so memory is the component's.

TFX's LocalDagRunner runs every executor in the runner's own process, one after another; what
TensorFlow, Beam and glibc keep of each component stays resident, so a run's peak memory
was the sum of its components' leftovers (5.9 GiB at 1M ratings, BENCHMARKS.md "Scale").
`ChildProcessExecutorOperator` is a TFX executor operator that hands the execution to
`python -m pipeline.component_process` instead: the launcher (driver, MLMD records, cache,
publishing) stays in the runner's process; the child runs TFX's own Python or Beam
operator on the ExecutionInfo proto and returns the ExecutorOutput proto, as a Kubeflow
container does. A child costs ~5-7 s (imports, graph building), so executors whose work
does not grow with the data (IN_PROCESS_EXECUTORS) stay in the runner's process.

The child's stderr goes through the parent: every line to the run's log, the Trainers'
progress records (modules/training_progress.PREFIX) also to the console. An executor's
exception comes back pickled and is raised again in the parent, so a failure reads the
same in both modes. The child dies with its parent (PR_SET_PDEATHSIG): a killed run leaves
no executor writing into outputs the next run is about to clean up.
"""

import contextlib
import ctypes
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import traceback

from absl import logging
from tfx.orchestration.portable import base_executor_operator
from tfx.orchestration.portable import launcher
from tfx.proto.orchestration import executable_spec_pb2
from tfx.proto.orchestration import execution_result_pb2

from modules import training_progress

_EXECUTION_FILE = "execution_invocation.pb"
_SPEC_FILE = "executor_spec.pb"
_SPEC_TYPE_FILE = "executor_spec_type"
_OUTPUT_FILE = "executor_output.pb"
_ERROR_FILE = "error.pickle"
_PR_SET_PDEATHSIG = 1

# Executors that read a schema or statistics, not the data: milliseconds in process.
IN_PROCESS_EXECUTORS = frozenset({
    "tfx.components.schema_gen.import_schema_gen.executor.Executor",
    "tfx.components.example_validator.executor.Executor",
    "components.validation_gate.component.ValidationGate_Executor",
})


@contextlib.contextmanager
def arguments_hidden_from_executors():
  """Runs the body with `sys.argv` cut to the program's name.

  TFX hands the process's arguments to executors: Python executors get them as extra
  flags, and every Beam executor parses them with absl, so a caller's `-v tests` (pytest's,
  or a script's) fails a run as `--verbosity=tests`. A run's settings are its
  PipelineConfig, never the caller's command line."""
  saved = sys.argv
  sys.argv = saved[:1]
  try:
    yield
  finally:
    sys.argv = saved


class ComponentProcessError(RuntimeError):
  """The child process of a component ended without a result (killed, or crashed)."""


class ChildProcessExecutorOperator(base_executor_operator.BaseExecutorOperator):
  """Runs a Python-class or Beam executor in a child process (see the module docstring)."""

  SUPPORTED_EXECUTOR_SPEC_TYPE = [executable_spec_pb2.PythonClassExecutableSpec,
                                  executable_spec_pb2.BeamExecutableSpec]
  SUPPORTED_PLATFORM_CONFIG_TYPE = []

  def __init__(self, executor_spec, platform_config=None, pipeline_platform_config=None):
    del platform_config, pipeline_platform_config  # local executors use neither
    super().__init__(executor_spec)

  def run_executor(self, execution_info):
    spec = self._executor_spec
    class_path = (spec.python_executor_spec.class_path
                  if isinstance(spec, executable_spec_pb2.BeamExecutableSpec) else spec.class_path)
    if class_path in IN_PROCESS_EXECUTORS:
      return launcher.DEFAULT_EXECUTOR_OPERATORS[type(spec)](spec).run_executor(execution_info)
    with tempfile.TemporaryDirectory(prefix="movrec-component-") as work_dir:
      _write(work_dir, _EXECUTION_FILE, execution_info.to_proto().SerializeToString())
      _write(work_dir, _SPEC_FILE, spec.SerializeToString())
      _write(work_dir, _SPEC_TYPE_FILE, type(spec).__name__.encode())
      returncode = _run_child(work_dir)
      error_path = os.path.join(work_dir, _ERROR_FILE)
      if os.path.exists(error_path):
        raise _load_error(error_path)
      output_path = os.path.join(work_dir, _OUTPUT_FILE)
      if returncode != 0 or not os.path.exists(output_path):
        how = (f"was killed by signal {signal.Signals(-returncode).name}"
               + (" (out of memory?)" if returncode == -signal.SIGKILL else "")
               if returncode < 0 else f"exited with code {returncode} and no result")
        raise ComponentProcessError(
            f"the executor's process {how}; the run's log has its output")
      with open(output_path, "rb") as f:
        return execution_result_pb2.ExecutorOutput.FromString(f.read())


def _write(work_dir: str, name: str, data: bytes) -> None:
  with open(os.path.join(work_dir, name), "wb") as f:
    f.write(data)


def _run_child(work_dir: str) -> int:
  """Runs the child to its end; its stderr to ours (the run's log), progress to the console."""
  env = dict(os.environ, PYTHONUNBUFFERED="1", TF_USE_LEGACY_KERAS="1")
  child = subprocess.Popen(
      [sys.executable, "-m", "pipeline.component_process", work_dir, str(os.getpid())],
      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
  relay = threading.Thread(target=_relay, args=(child.stdout,), name="component-output",
                           daemon=True)
  relay.start()
  try:
    returncode = child.wait()
  except BaseException:  # KeyboardInterrupt: the child must not outlive the run's cleanup
    child.kill()
    child.wait()
    raise
  finally:
    relay.join(timeout=10)
  return returncode


def _relay(stream) -> None:
  """Each line of the child's output to our fd 2 (the run's log during a run); the
  Trainers' progress records also as our own log records, which the console shows."""
  for raw in iter(stream.readline, b""):
    line = raw.decode("utf-8", "replace").rstrip("\n")
    at = line.find(training_progress.PREFIX)
    if at >= 0:
      logging.info("%s", line[at:])
    else:
      os.write(2, raw)
  stream.close()


def _load_error(path: str) -> BaseException:
  """The executor's exception as the child raised it (its traceback in the run's log)."""
  with open(path, "rb") as f:
    kind, message, error_bytes = pickle.load(f)
  try:
    error = pickle.loads(error_bytes) if error_bytes else None
  except Exception:  # pylint: disable=broad-except
    error = None
  return error if isinstance(error, BaseException) else ComponentProcessError(
      f"{kind}: {message}")


def _die_with_parent(parent_pid: int) -> None:
  """Linux: SIGKILL this process when the parent dies; exit if it already has."""
  try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  except (OSError, AttributeError):  # not Linux: the child may outlive a killed run
    pass
  if os.getppid() != parent_pid:
    os._exit(1)  # pylint: disable=protected-access


def _child_main(work_dir: str, parent_pid: int) -> int:
  _die_with_parent(parent_pid)
  logging.set_verbosity(logging.INFO)
  logging.use_absl_handler()
  from tfx.orchestration.portable import data_types  # pylint: disable=g-import-not-at-top
  from tfx.proto.orchestration import execution_invocation_pb2  # pylint: disable=g-import-not-at-top

  def read(name: str) -> bytes:
    with open(os.path.join(work_dir, name), "rb") as f:
      return f.read()

  try:
    spec_class = getattr(executable_spec_pb2, read(_SPEC_TYPE_FILE).decode())
    spec = spec_class.FromString(read(_SPEC_FILE))
    with arguments_hidden_from_executors():  # the child's arguments are its work dir
      # The operator imports the executor (and so its artifact classes) before the
      # artifacts are rebuilt from the proto.
      operator = launcher.DEFAULT_EXECUTOR_OPERATORS[spec_class](executor_spec=spec)
      info = data_types.ExecutionInfo.from_proto(
          execution_invocation_pb2.ExecutionInvocation.FromString(read(_EXECUTION_FILE)))
      output = operator.run_executor(info)
  except BaseException as e:  # pylint: disable=broad-except
    traceback.print_exc()  # into the run's log
    try:
      error_bytes = pickle.dumps(e)
    except Exception:  # pylint: disable=broad-except
      error_bytes = b""
    _write(work_dir, _ERROR_FILE, pickle.dumps((type(e).__name__, str(e), error_bytes)))
    return 1
  _write(work_dir, _OUTPUT_FILE, output.SerializeToString())
  return 0


if __name__ == "__main__":
  sys.exit(_child_main(sys.argv[1], int(sys.argv[2])))
