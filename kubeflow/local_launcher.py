"""Runs a compiled pipeline spec on this machine, as KFP v2 would.

Each container task runs the exact command line of the spec (TFX's
`kubeflow_v2_run_executor`, as in the image) with the ExecutorInput the KFP v2 driver
builds: typed parameters (pipeline parameters applied), input artifacts from the
producers' ExecutorOutput, output artifacts under `<pipeline root>/<run id>/<task>/`.
Resolver tasks are answered from the metadata store the run records into
(`kfp_store`). As on a cluster, every task whose upstream tasks are done runs at once (up
to `parallel` containers), so a dependency the spec forgets shows as a task that starts
too early; caching is not emulated. After a failure no new task starts, the running ones
finish and are recorded, and the first failure is raised.
"""

import concurrent.futures
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, TextIO, Tuple

import schemas
from kubeflow import compiled_spec
from kubeflow.compiled_spec import CompiledSpecError, Task
from kubeflow.kfp_store import KfpStore
from kubeflow.runner import IMAGE_SCHEMA_DIR
from modules import training_progress
from modules.errors import MovrecError
from pipeline.progress import ProgressReporter

EXECUTOR_OUTPUT = "executor_output.json"
DEFAULT_METADATA = "metadata.db"  # in the pipeline root, unless the caller gives a store
TASK_LOG = "task.log"  # the task's stdout and stderr, beside its outputs
# Folders the image has and this machine has elsewhere (the Dockerfile copies schemas/).
IMAGE_PATHS = {IMAGE_SCHEMA_DIR: os.path.dirname(os.path.abspath(schemas.__file__))}


class TaskFailedError(MovrecError, RuntimeError):
  """A task's container exited non-zero: names the task, its log and the log's end."""


@dataclasses.dataclass
class CompiledRun:
  run_id: str
  run_root: str  # <pipeline root>/<run id>
  outputs: Dict[str, Dict[str, List[Dict]]]  # task -> output key -> runtime artifacts

  def blessings(self) -> Dict[str, bool]:
    """{task: blessed} for every task with a `blessing` output."""
    return {task: bool(out["blessing"][0]["metadata"].get("blessed"))
            for task, out in self.outputs.items() if out.get("blessing")}


def run_compiled(spec_path: str, store, overrides: Optional[Dict[str, str]] = None,
                 pipeline_root: Optional[str] = None, out: TextIO = sys.stdout,
                 python: str = sys.executable, parallel: int = 0) -> CompiledRun:
  """Runs every task of the spec; `parallel` containers at most at once (0: one per core).
  Resolvers and the store's records run in this thread; containers in worker threads."""
  spec = compiled_spec.load(spec_path)
  parameters = compiled_spec.pipeline_parameters(spec, overrides)
  name = compiled_spec.pipeline_name(spec)
  run_id = f"{name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
  run_root = os.path.join(pipeline_root or spec["runtimeConfig"]["gcsOutputDirectory"], run_id)
  records = KfpStore(store, name, run_id)
  tasks = compiled_spec.tasks_in_order(spec)
  limit = parallel or os.cpu_count() or 1
  reporter = ProgressReporter(len(tasks), out)
  reporter.line(f"run {run_id}: {len(tasks)} tasks, outputs under {run_root}, up to "
                f"{limit} at once")
  produced: Dict[str, Dict[str, List[Dict]]] = {}
  waiting = list(tasks)  # dependency order: ready tasks start in it
  running: Dict[concurrent.futures.Future, Tuple[Task, Dict, float]] = {}
  failure: Optional[BaseException] = None

  def finish(task: Task, inputs, outputs, started: float) -> None:
    records.record(task.name, inputs, outputs, "COMPLETE")
    produced[task.name] = outputs
    state = "found" if task.kind == "resolver" and any(outputs.values()) else (
        "none" if task.kind == "resolver" else "done")
    reporter.report(task.name, state, time.monotonic() - started)

  with concurrent.futures.ThreadPoolExecutor(max_workers=limit) as pool:
    while waiting or running:
      ready = [t for t in waiting if set(t.depends_on) <= set(produced)]
      for task in ready if failure is None else []:
        if task.kind == "container" and len(running) >= limit:
          continue
        waiting.remove(task)
        inputs, started = _input_artifacts(task, produced), time.monotonic()
        try:
          if task.kind == "container":
            running[pool.submit(_launch, task, inputs,
                                compiled_spec.task_parameters(task, parameters),
                                os.path.join(run_root, task.name), python, reporter)] = (
                                    task, inputs, started)
            continue
          if task.kind != "resolver":
            raise CompiledSpecError(f"task {task.name}: {task.kind} tasks are not supported")
          outputs = _resolve(task, inputs, records)
        except Exception as e:  # pylint: disable=broad-except
          records.record(task.name, inputs, {}, "FAILED")
          failure = failure or e
          break
        finish(task, inputs, outputs, started)
      if not running:
        if failure is not None or not waiting:
          break
        continue  # resolvers made more tasks ready (a DAG: tasks_in_order checked it)
      done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
      for future in done:
        task, inputs, started = running.pop(future)
        try:
          outputs = future.result()
        except Exception as e:  # pylint: disable=broad-except
          records.record(task.name, inputs, {}, "FAILED")
          failure = failure or e
          continue
        finish(task, inputs, outputs, started)
  if failure is not None:
    raise failure
  return CompiledRun(run_id, run_root, produced)


def run_resolvers(spec: Dict, records: KfpStore) -> Dict[str, Dict[str, List[Dict]]]:
  """What the spec's resolver tasks answer from the store now (no container runs)."""
  produced = {}
  for task in compiled_spec.tasks_in_order(spec):
    if task.kind == "resolver":
      produced[task.name] = _resolve(task, _input_artifacts(task, produced), records)
  return produced


def _input_artifacts(task: Task, produced) -> Dict[str, List[Dict]]:
  inputs = {}
  for key, source in task.spec.get("inputs", {}).get("artifacts", {}).items():
    if "taskOutputArtifact" not in source:
      raise CompiledSpecError(f"task {task.name}: input {key} comes from {source}, which "
                              "this launcher does not support")
    upstream = source["taskOutputArtifact"]
    listed = produced[upstream["producerTask"]].get(upstream["outputArtifactKey"], [])
    inputs[key] = [dict(a, type=task.input_type(key)) for a in listed]
  return inputs


def _resolve(task: Task, inputs, records: KfpStore) -> Dict[str, List[Dict]]:
  """Answers each output query; a filter naming an input's metadata
  ({{$.inputs.artifacts['input'].metadata['current_model_id']}}) finds nothing when that
  input resolved to nothing."""
  outputs = {}
  for key, query in task.executor["resolver"]["outputArtifactQueries"].items():
    text = query["filter"]
    for input_key, listed in inputs.items():
      for field in list(listed[0]["metadata"]) if listed else []:
        text = text.replace(f"{{{{$.inputs.artifacts['{input_key}'].metadata['{field}']}}}}",
                            str(listed[0]["metadata"][field]))
    if "{{$" in text:
      outputs[key] = []
      continue
    found = records.query(text, query.get("limit"))
    outputs[key] = [dict(a, type=task.output_types()[key]) for a in found]
  return outputs


def _image_paths(parameters: Dict) -> Dict:
  mapped = {}
  for name, value in parameters.items():
    text = value.get("stringValue")
    for image_dir, local_dir in IMAGE_PATHS.items():
      if text and text.startswith(image_dir + "/"):
        value = {"stringValue": local_dir + text[len(image_dir):]}
    mapped[name] = value
  return mapped


def _launch(task: Task, inputs, parameters, task_dir: str, python: str,
            reporter: ProgressReporter) -> Dict[str, List[Dict]]:
  outputs = {key: [{"name": f"{os.path.basename(os.path.dirname(task_dir))}/{task.name}/{key}",
                    "type": artifact_type, "uri": os.path.join(task_dir, key), "metadata": {}}]
             for key, artifact_type in task.output_types().items()}
  executor_input = {
      "inputs": {"parameters": _image_paths(parameters),
                 "artifacts": {k: {"artifacts": v} for k, v in inputs.items()}},
      "outputs": {"artifacts": {k: {"artifacts": v} for k, v in outputs.items()},
                  "outputFile": os.path.join(task_dir, EXECUTOR_OUTPUT)}}
  os.makedirs(task_dir, exist_ok=True)
  log_path = os.path.join(task_dir, TASK_LOG)
  command = compiled_spec.container_command(task, executor_input, python)
  env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}  # as the image
  with open(log_path, "w") as log:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env, cwd=task_dir)
    for line in process.stdout:
      log.write(line)
      if training_progress.PREFIX in line:  # Trainer epochs, live
        reporter.line("        " + line.split(training_progress.PREFIX, 1)[1].rstrip())
    code = process.wait()
  if code != 0:
    with open(log_path) as f:
      tail = "".join(f.readlines()[-15:])
    raise TaskFailedError(f"task {task.name} exited with code {code}; its log: {log_path}\n"
                          f"{tail}")
  with open(os.path.join(task_dir, EXECUTOR_OUTPUT)) as f:
    written = json.load(f).get("artifacts", {})
  for key, listed in written.items():
    for mine, theirs in zip(outputs[key], listed["artifacts"]):
      mine["uri"] = theirs.get("uri", mine["uri"])
      mine["metadata"] = theirs.get("metadata", {})
  return outputs
