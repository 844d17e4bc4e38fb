"""A run killed by SIGKILL during a Trainer, then run again: every executor in its own
process (`executors="child_process"`, pipeline/component_process.py), on a real MLMD store.
Its own file (not test_faults.py's pushed-run group, tests/conftest.py): it runs its own
pipeline, so a test worker can run it beside the shared run's tests."""
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest


KILL_SCRIPT = """
import json, sys
from pipeline import local_runner
from pipeline.config import PipelineConfig
local_runner.run(PipelineConfig(**json.loads(sys.argv[1])))
"""


def executor_children(runner_pid: int):
  """The component processes (pipeline/component_process.py) the runner has started."""
  import psutil  # pylint: disable=g-import-not-at-top
  return [p for p in psutil.Process(runner_pid).children()
          if "pipeline.component_process" in " ".join(p.cmdline())]


@pytest.mark.e2e
def test_a_run_killed_during_a_trainer_is_recorded_and_the_next_run_completes(
    tmp_path, synthetic_dir, fast_pipeline_without_scorer):
  """Both runs give each executor its own process: killing the runner (not its process
  group, as a user's `kill` would) must take the Trainer's process with it, and the next
  run's children must bring back blessings (it pushes) and progress lines."""
  import psutil  # pylint: disable=g-import-not-at-top
  from pipeline import abandoned, inspect_store, local_runner  # pylint: disable=g-import-not-at-top
  from pipeline.config import PipelineConfig  # pylint: disable=g-import-not-at-top
  from pipeline.errors import StoreInUseError  # pylint: disable=g-import-not-at-top
  values = dict(data_dir=synthetic_dir, output_dir=str(tmp_path / "out"),
                executors="child_process", **fast_pipeline_without_scorer)
  config = PipelineConfig(**values)
  process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, json.dumps(values)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
  trainers = [os.path.join(config.pipeline_root, n) for n in ("RetrievalTrainer", "RankingTrainer")]
  deadline = time.monotonic() + 600
  while not any(os.path.isdir(t) for t in trainers):
    assert process.poll() is None and time.monotonic() < deadline, "the run ended first"
    time.sleep(0.5)
  # A second run on the same store meanwhile is refused, not interleaved.
  with pytest.raises(StoreInUseError, match="Another run is using the metadata store"):
    local_runner.run(config, out=io.StringIO())
  time.sleep(3)  # well inside the Trainer
  trainer_processes = executor_children(process.pid)
  assert len(trainer_processes) == 1, "the Trainer runs in a child of the runner"
  os.kill(process.pid, signal.SIGKILL)
  process.wait()
  gone, alive = psutil.wait_procs(trainer_processes, timeout=30)
  assert gone and not alive, "the Trainer's process outlived the killed run"

  out = io.StringIO()
  second = local_runner.run(config, out=out).run
  assert second.count("FAILED") == 0
  assert "left running by a killed run" in out.getvalue()
  assert "RetrievalTrainer epoch 4/4" in out.getvalue()  # relayed from its process
  assert os.listdir(config.serving_dir), "blessings written in child processes reached the pusher"
  store = local_runner.metadata_store(config)
  killed = [e for e in store.get_executions()
            if abandoned.REASON_KEY in e.custom_properties]
  assert killed and all(e.last_known_state == e.CANCELED for e in killed)
  for execution in killed:  # its partial output folders are gone
    for trainer in trainers:
      for key in os.listdir(trainer) if os.path.isdir(trainer) else []:
        assert not os.path.exists(os.path.join(trainer, key, str(execution.id)))
  statuses = [r["status"] for r in inspect_store.runs(store, config.pipeline_name)]
  assert statuses == ["FAILED", "COMPLETE"]
