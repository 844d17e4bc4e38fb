"""Reading a compiled KFP v2 pipeline spec (the JSON `movrec compile` writes): its tasks
in dependency order, their parameters, artifact types and container command lines.

Pure JSON handling, no TFX import: `local_launcher` runs what this module describes.
"""

import dataclasses
import json
import re
from typing import Dict, List, Optional

from modules.errors import MovrecError

EXECUTOR_INPUT_PLACEHOLDER = "{{$}}"  # the whole ExecutorInput, as JSON
# pipeline spec ParameterType -> the typed Value field of runtimeConfig.parameters
_VALUE_FIELDS = {"STRING": "stringValue", "INT": "intValue", "DOUBLE": "doubleValue"}


class CompiledSpecError(MovrecError, ValueError):
  """The compiled spec is not one this launcher can run; the message says what and where."""


@dataclasses.dataclass
class Task:
  name: str
  spec: Dict  # root.dag.tasks[name]
  component: Dict  # components[componentRef.name]
  executor: Dict  # deploymentSpec.executors[component.executorLabel]

  @property
  def depends_on(self) -> List[str]:
    return self.spec.get("dependentTasks", [])

  @property
  def kind(self) -> str:
    """"container", "resolver" or "importer"."""
    return next(iter(self.executor))

  def input_type(self, key: str) -> Dict:
    return self.component["inputDefinitions"]["artifacts"][key]["artifactType"]

  def output_types(self) -> Dict[str, Dict]:
    return {key: d["artifactType"] for key, d in
            self.component.get("outputDefinitions", {}).get("artifacts", {}).items()}


def load(path: str) -> Dict:
  try:
    with open(path) as f:
      spec = json.load(f)
  except FileNotFoundError:
    raise CompiledSpecError(f"{path} does not exist; write it with `movrec compile`") from None
  except json.JSONDecodeError as e:
    raise CompiledSpecError(f"{path} is not JSON ({e})") from None
  if "pipelineSpec" not in spec or "runtimeConfig" not in spec:
    raise CompiledSpecError(f"{path} is not a compiled pipeline job (no pipelineSpec / "
                            "runtimeConfig); write it with `movrec compile`")
  return spec


def pipeline_name(spec: Dict) -> str:
  return spec["pipelineSpec"]["pipelineInfo"]["name"]


def tasks_in_order(spec: Dict) -> List[Task]:
  """Every task, each after the tasks it depends on (ties broken by name)."""
  pipeline = spec["pipelineSpec"]
  remaining = {}
  for name, task in pipeline["root"]["dag"]["tasks"].items():
    component = pipeline["components"][task["componentRef"]["name"]]
    executor = pipeline["deploymentSpec"]["executors"][component["executorLabel"]]
    remaining[name] = Task(name, task, component, executor)
  ordered, done = [], set()
  while remaining:
    ready = sorted(n for n, t in remaining.items() if set(t.depends_on) <= done)
    if not ready:
      raise CompiledSpecError(f"tasks {sorted(remaining)} depend on each other in a cycle")
    for name in ready:
      ordered.append(remaining.pop(name))
      done.add(name)
  return ordered


def declared_parameters(spec: Dict) -> Dict[str, Dict]:
  """The runtime parameters the spec declares: {name: {"type": "STRING" | ...}}."""
  return spec["pipelineSpec"]["root"].get("inputDefinitions", {}).get("parameters", {})


def pipeline_parameters(spec: Dict, overrides: Optional[Dict[str, str]] = None) -> Dict:
  """The pipeline's parameters as typed Values: compiled defaults, then `overrides`."""
  declared = declared_parameters(spec)
  values = dict(spec["runtimeConfig"].get("parameters", {}))
  for name, text in (overrides or {}).items():
    if name not in declared:
      raise CompiledSpecError(f"unknown runtime parameter {name!r}; the spec declares "
                              f"{sorted(declared)}")
    kind = declared[name]["type"]
    try:
      value = {"INT": lambda v: str(int(v)), "DOUBLE": float}.get(kind, str)(text)
    except ValueError:
      raise CompiledSpecError(f"runtime parameter {name}={text!r} is not {kind}") from None
    values[name] = {_VALUE_FIELDS[kind]: value}
  missing = sorted(set(declared) - set(values))
  if missing:
    raise CompiledSpecError(f"runtime parameters without a value: {missing}")
  return values


def task_parameters(task: Task, pipeline_values: Dict) -> Dict:
  """The task's input parameters as typed Values (constants or pipeline parameters)."""
  values = {}
  for name, source in task.spec.get("inputs", {}).get("parameters", {}).items():
    if "componentInputParameter" in source:
      values[name] = pipeline_values[source["componentInputParameter"]]
    elif "runtimeValue" in source:
      values[name] = source["runtimeValue"]["constantValue"]
    else:
      raise CompiledSpecError(f"task {task.name}: parameter {name} comes from {source}, "
                              "which this launcher does not support")
  return values


def schema_title(artifact_type: Dict) -> str:
  """'tfx.Model' from {"schemaTitle": ...} or an instanceSchema's `title:` line."""
  if "schemaTitle" in artifact_type:
    return artifact_type["schemaTitle"]
  match = re.search(r"^title:\s*(\S+)", artifact_type.get("instanceSchema", ""), re.M)
  if not match:
    raise CompiledSpecError(f"artifact type without a title: {artifact_type}")
  return match.group(1)


def container_command(task: Task, executor_input: Dict, python: str) -> List[str]:
  """The container's command line with the ExecutorInput filled in, as the KFP launcher
  does; `python` replaces the image's interpreter."""
  container = task.executor["container"]
  line = [python if part == "python" else part for part in container["command"]]
  for arg in container.get("args", []):
    if "{{$" in arg and arg != EXECUTOR_INPUT_PLACEHOLDER:
      raise CompiledSpecError(f"task {task.name}: placeholder {arg!r} is not supported "
                              "(only the whole ExecutorInput, {{$}})")
    line.append(json.dumps(executor_input) if arg == EXECUTOR_INPUT_PLACEHOLDER else arg)
  return line
