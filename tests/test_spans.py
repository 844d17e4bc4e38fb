"""Data arriving in spans: ExampleGen reads the newest span; training uses a rolling window
and warm-starts from the last blessed models."""
import dataclasses
import io
import json
import os
import sys

import pytest

from components.movielens_example_gen import synthetic
from pipeline import local_runner
from pipeline.config import PipelineConfig
from bundle import layout as bundle_layout
from serving.retriever import latest_bundle_path


def consumed(store, run, node: str, key: str):
  """The `key` input artifacts the node's execution in `run` read."""
  context = store.get_context_by_type_and_name("pipeline_run", run.run_id)
  executions = [e for e in store.get_executions_by_context(context.id)
                if node in {c.name.split(".", 1)[-1]
                            for c in store.get_contexts_by_execution(e.id) if c.type == "node"}]
  (execution,) = executions
  events = [e for e in store.get_events_by_execution_ids([execution.id])
            if e.type == e.INPUT and e.path.steps[0].key == key]
  return store.get_artifacts_by_id([e.artifact_id for e in events])


def consumed_spans(store, run, node: str, key: str = "examples"):
  """Spans of the `key` artifacts the node's execution in `run` read."""
  return sorted(a.custom_properties["span"].int_value for a in consumed(store, run, node, key))


def training_summary(model_uri: str) -> dict:
  with open(os.path.join(model_uri, "Format-Serving", "training.json")) as f:
    return json.load(f)


@pytest.mark.e2e
def test_second_span_trains_on_a_rolling_window_of_both_warm_started(
    tmp_path, fast_pipeline_without_scorer, monkeypatch):
  # A caller's command line that TFX's executors would misread (test_component_process.py):
  # these runs' executors are in this process.
  monkeypatch.setattr(sys, "argv", ["pytest", "-v", "tests"])
  data = synthetic.generate(n_users=80, n_movies=60, seed=11)
  ratings = sorted(data.ratings, key=lambda r: r.timestamp)
  half = len(ratings) // 2
  root = tmp_path / "data"
  synthetic.write(dataclasses.replace(data, ratings=ratings[:half]), str(root / "span-1"))
  config = PipelineConfig(data_dir=str(root), output_dir=str(tmp_path / "out"),
                          span_pattern="span-{SPAN}", rolling_spans=2, warm_start=True,
                          # ~50 eval users per span: too few for the gates to tell models
                          # apart (run alone, the second ranking model had an RMSE 0.09
                          # above the first's and was not pushed). This test is about
                          # spans, not quality.
                          retrieval_must_beat_popularity=False,
                          max_regression=1.0, ranking_max_regression=1.0,
                          **fast_pipeline_without_scorer)
  store = local_runner.metadata_store(config)

  first = local_runner.run(config, out=io.StringIO()).run
  assert first.output("MovieLensExampleGen", "examples").custom_properties[
      "span"].int_value == 1
  assert consumed_spans(store, first, "Transform") == [1]
  for trainer in ("RetrievalTrainer", "RankingTrainer"):  # nothing blessed yet: cold start
    assert consumed(store, first, trainer, "base_model") == []
    assert training_summary(first.output(trainer, "model").uri)["warm_start"] is None
  assert first.output("BundlePusher", "pushed_model").custom_properties["pushed"].int_value

  synthetic.write(dataclasses.replace(data, ratings=ratings[half:]), str(root / "span-2"))
  second_result = local_runner.run(config, out=io.StringIO())
  second = second_result.run
  # `movrec run`'s summary names the span and the window.
  from movrec import run_cmd  # pylint: disable=g-import-not-at-top
  assert run_cmd.summary_lines(second_result, config, 1.0)[1] == (
      f"  data        {root} (ml-100k, last split; span 2, trained on the newest 2)")
  examples = second.output("MovieLensExampleGen", "examples")
  assert examples.custom_properties["span"].int_value == 2
  assert consumed_spans(store, second, "Transform") == [1, 2]  # the window: both spans
  assert consumed_spans(store, second, "RetrievalEvaluator") == [2]  # judged on the newest
  # Both Trainers started from the first run's (blessed) models, rows remapped by id.
  for trainer, tables in (("RetrievalTrainer", "candidate/id_embedding"),
                          ("RankingTrainer", "member_0/movie_bias")):
    (base,) = consumed(store, second, trainer, "base_model")
    assert base.id == first.output(trainer, "model").id
    warm = training_summary(second.output(trainer, "model").uri)["warm_start"]
    if trainer == "RankingTrainer":  # one summary per ensemble member
      warm = warm["members"][0]
    assert warm["skipped"] == [] and warm["copied"] > 0
    assert [rows for path, rows in warm["remapped"].items() if path.startswith(tables)][0] > 0
  # The pushed users table holds the users of both spans (the models know them all).
  assert second.output("BundlePusher", "pushed_model").custom_properties["pushed"].int_value
  bundle = latest_bundle_path(config.serving_dir)
  with open(os.path.join(bundle, bundle_layout.USERS_FILE)) as f:
    pushed_users = {json.loads(line)["user_id"] for line in f}
  assert pushed_users == {str(r.user_id) for r in ratings}
  n_span_2 = sum(examples.custom_properties[f"num_examples_{s}"].int_value
                 for s in ("train", "eval"))
  assert n_span_2 == len(ratings) - half


def test_movrec_run_takes_a_directory_of_spans(tmp_path):
  """The CLI checks the newest span's files, not the directory's (which holds spans)."""
  from movrec import main, run_cmd  # pylint: disable=g-import-not-at-top
  from components.movielens_example_gen.layouts import MovieLensDataError  # pylint: disable=g-import-not-at-top
  for span in (1, 2):
    synthetic.write(synthetic.generate(n_users=20, n_movies=15, seed=span),
                    str(tmp_path / f"span-{span}"))
  run = lambda *flags: run_cmd.run_config(main.build_parser().parse_args(
      ["run", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), *flags]))

  config = run("--span-pattern", "span-{SPAN}")
  assert (config.layout, config.layout_dir) == ("ml-100k", str(tmp_path / "span-2"))
  with pytest.raises(MovieLensDataError, match="does not hold a MovieLens release"):
    run()  # without the pattern, a directory of spans is not a release
  with pytest.raises(MovieLensDataError, match="no span directory matching 'day-{SPAN}'"):
    run("--span-pattern", "day-{SPAN}")
