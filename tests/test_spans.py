"""Data arriving in spans: ExampleGen reads the newest span; training uses a rolling window."""
import dataclasses
import io

import pytest

from components.movielens_example_gen import synthetic
from pipeline import local_runner
from pipeline.config import PipelineConfig


def consumed_spans(store, run, node: str, key: str = "examples"):
  """Spans of the `key` artifacts the node's execution in `run` read."""
  context = store.get_context_by_type_and_name("pipeline_run", run.run_id)
  executions = [e for e in store.get_executions_by_context(context.id)
                if node in {c.name.split(".", 1)[-1]
                            for c in store.get_contexts_by_execution(e.id) if c.type == "node"}]
  (execution,) = executions
  events = [e for e in store.get_events_by_execution_ids([execution.id])
            if e.type == e.INPUT and e.path.steps[0].key == key]
  artifacts = store.get_artifacts_by_id([e.artifact_id for e in events])
  return sorted(a.custom_properties["span"].int_value for a in artifacts)


@pytest.mark.e2e
def test_second_span_trains_on_a_rolling_window_of_both(tmp_path, fast_pipeline):
  data = synthetic.generate(n_users=80, n_movies=60, seed=11)
  ratings = sorted(data.ratings, key=lambda r: r.timestamp)
  half = len(ratings) // 2
  root = tmp_path / "data"
  synthetic.write(dataclasses.replace(data, ratings=ratings[:half]), str(root / "span-1"))
  config = PipelineConfig(data_dir=str(root), output_dir=str(tmp_path / "out"),
                          span_pattern="span-{SPAN}", rolling_spans=2, **fast_pipeline)
  store = local_runner.metadata_store(config)

  first = local_runner.run(config, out=io.StringIO()).run
  assert first.output("MovieLensExampleGen", "examples").custom_properties[
      "span"].int_value == 1
  assert consumed_spans(store, first, "Transform") == [1]

  synthetic.write(dataclasses.replace(data, ratings=ratings[half:]), str(root / "span-2"))
  second = local_runner.run(config, out=io.StringIO()).run
  examples = second.output("MovieLensExampleGen", "examples")
  assert examples.custom_properties["span"].int_value == 2
  assert consumed_spans(store, second, "Transform") == [1, 2]  # the window: both spans
  assert consumed_spans(store, second, "RetrievalEvaluator") == [2]  # judged on the newest
  n_span_2 = sum(examples.custom_properties[f"num_examples_{s}"].int_value
                 for s in ("train", "eval"))
  assert n_span_2 == len(ratings) - half
