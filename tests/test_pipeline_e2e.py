"""End-to-end LocalDagRunner runs: a real MLMD store, real Beam, real TFX components."""
import io
import os

import pytest
import tensorflow as tf

from components.movielens_example_gen import layouts
from components.movielens_example_gen import synthetic
from modules import features as F
from pipeline import local_runner
from pipeline.config import PipelineConfig
from pipeline import ranking_eval_config
from pipeline.errors import PipelineRunError
from bundle import layout as bundle_layout
from serving.retriever import load_latest_bundle

COMPONENTS = {"MovieLensExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator",
              "CandidateStatisticsGen", "CandidateSchemaGen", "CandidateExampleValidator",
              "ValidationGate", "Transform", "RetrievalTrainer",
              "LatestBlessedRetrievalModelResolver", "RetrievalEvaluator", "IndexBuilder",
              "RankingTrainer", "LatestBlessedRankingModelResolver", "RankingEvaluator",
              "LatestBlessedRankingOrderResolver", "TwoStageEvaluator", "BundlePusher"}
RESOLVERS = {"LatestBlessedRetrievalModelResolver", "LatestBlessedRankingModelResolver",
             "LatestBlessedRankingOrderResolver"}
# What a rerun with unchanged inputs executes again: the evaluators now have a baseline
# (the models blessed by the first run), so they re-evaluate (the TwoStageEvaluator when
# the first run blessed the ranking order); the pusher sees new blessings.
RERUN_EXECUTED = {"RetrievalEvaluator", "RankingEvaluator", "TwoStageEvaluator",
                  "BundlePusher"}


def props(artifact):
  return {k: getattr(v, v.WhichOneof("value")) for k, v in artifact.custom_properties.items()}


def read_examples(uri, split):
  pattern = os.path.join(uri, f"Split-{split}", "*.gz")
  return [tf.train.Example.FromString(r.numpy()) for r in
          tf.data.TFRecordDataset(tf.io.gfile.glob(pattern), compression_type="GZIP")]


@pytest.mark.e2e
def test_synthetic_run_is_recorded_in_mlmd_pushed_and_then_cached(pushed_run, synthetic_dir,
                                                                  synthetic_data, fast_pipeline):
  config, first, console = pushed_run
  assert {c.node_id for c in first.components} == COMPONENTS
  assert first.count("COMPLETE") == len(COMPONENTS)
  # One line per component as it finishes (Transform's too: TensorFlow used to reset
  # absl's level when saving its graph, and every INFO record after it was lost), with
  # both Trainers' epochs under theirs.
  lines = console.splitlines()
  component_lines = [line for line in lines if line.startswith("[")]
  assert len(component_lines) == len(COMPONENTS)
  assert all(" done " in line for line in component_lines)
  for trainer, hparams in (("RetrievalTrainer", "retrieval_hparams"),
                           ("RankingTrainer", "ranking_hparams")):
    epochs = fast_pipeline[hparams]["epochs"]
    finished = next(i for i, line in enumerate(lines) if line.startswith("[") and trainer in line)
    progress = [i for i, line in enumerate(lines) if f"{trainer} epoch " in line]
    assert len(progress) == epochs and max(progress) < finished, (trainer, lines)
  with open(os.path.join(config.log_dir, sorted(os.listdir(config.log_dir))[0])) as f:
    log = f.read()
  assert "Component BundlePusher is finished." in log
  assert "tfx_ephemeral" not in log  # no Beam component built an sdist of TFX (config.py)

  store = local_runner.metadata_store(config)
  assert len(store.get_executions()) == len(COMPONENTS)
  types = {t.name for t in store.get_artifact_types_by_id(
      list({a.type_id for a in store.get_artifacts()}))}
  assert {"Examples", "ExampleStatistics", "Schema", "ExampleAnomalies", "TransformGraph",
          "Model", "ModelEvaluation", "ModelBlessing", "movrec.RetrievalIndex",
          "PushedModel"} <= types

  examples = first.output("MovieLensExampleGen", "examples")
  assert examples.properties["split_names"].string_value == '["train", "eval"]'
  n_train = examples.custom_properties["num_examples_train"].int_value
  n_eval = examples.custom_properties["num_examples_eval"].int_value
  assert n_train + n_eval == len(synthetic_data.ratings)
  # The default split holds out each user's latest rating (ties by movie id).
  assert examples.custom_properties["split_method"].string_value == "last"
  latest = {}
  for r in synthetic_data.ratings:
    latest[r.user_id] = max(latest.get(r.user_id, (0, "")), (r.timestamp, r.movie_id))
  held_out = {(e.features.feature[F.USER_ID].bytes_list.value[0].decode(),
               (e.features.feature[F.TIMESTAMP].int64_list.value[0],
                e.features.feature[F.MOVIE_ID].bytes_list.value[0].decode()))
              for e in read_examples(examples.uri, "eval")}
  assert held_out == set(latest.items()) and n_eval == len(latest)
  train = read_examples(examples.uri, "train")
  assert len(train) == n_train
  assert set(train[0].features.feature) == set(F.RATING_FEATURES) | set(F.USER_DEMOGRAPHIC_FEATURES)
  candidates = first.output("MovieLensExampleGen", "candidates")
  assert len(read_examples(candidates.uri, F.CATALOG_SPLIT)) == len(synthetic_data.movies)

  graph = first.output("Transform", "transform_graph").uri
  vocab_dir = os.path.join(graph, "transform_fn", "assets")
  for vocab in F.VOCABULARY_NAMES.values():
    assert os.path.getsize(os.path.join(vocab_dir, vocab)) > 0, vocab
  movie_vocab = open(os.path.join(vocab_dir, F.VOCABULARY_NAMES[F.MOVIE_ID])).read().split()
  assert set(movie_vocab) <= {m.movie_id for m in synthetic_data.movies}

  # Stage one: the model learnt the synthetic taste structure, was blessed, indexed, pushed.
  evaluation = props(first.output("RetrievalEvaluator", "evaluation"))
  assert evaluation["hr_at_10"] > evaluation["popularity_hr_at_10"] + 0.1
  assert evaluation["eval_users"] == len(latest)
  assert props(first.output("RetrievalEvaluator", "blessing"))["blessed"] == 1
  index = first.output("IndexBuilder", "index")
  assert props(index)["num_candidates"] == len(synthetic_data.movies)
  assert props(index)["search_mode"] == "exact"
  assert props(index)["recall_at_10"] == 1.0
  assert props(first.output("IndexBuilder", "blessing"))["blessed"] == 1
  assert props(first.output("RankingEvaluator", "blessing"))["blessed"] == 1
  ranking = ranking_eval_config.load_metrics(first.output("RankingEvaluator", "evaluation").uri)
  assert ranking[""]["example_count"] == n_eval
  assert {"user_gender=F", "user_gender=M"} <= set(ranking)  # sliced by gender and genre
  assert any(name.startswith("movie_genres=") for name in ranking)
  pushed = props(first.output("BundlePusher", "pushed_model"))
  assert pushed["pushed"] == 1 and os.path.isdir(pushed["pushed_destination"])
  bundle = pushed["pushed_destination"]
  assert {"manifest.json", "query_model", "index", "ranking_model", "ranking_model.tflite",
          "sequence_scorer.tflite", "users.jsonl", "popularity.json"} <= set(os.listdir(bundle))
  assert bundle_layout.versions(config.serving_dir) == [pushed["pushed_version"]]

  retriever = load_latest_bundle(config.serving_dir)
  assert retriever.manifest["retrieval_model"]["id"] == first.output(
      "RetrievalTrainer", "model").id
  user = synthetic_data.ratings[0].user_id
  rated = set(retriever.rated(user))
  recs = retriever.recommend(user, k=10, exclude_rated=True)
  assert len(recs) == 10 and not rated & {r.movie_id for r in recs}
  assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)

  second = local_runner.run(config, out=io.StringIO()).run
  assert second.run_id != first.run_id
  executed = {c.node_id for c in second.components if c.state == "COMPLETE"}
  assert executed <= RERUN_EXECUTED | RESOLVERS
  assert second.count("CACHED") >= len(COMPONENTS) - len(RERUN_EXECUTED) - len(RESOLVERS)
  assert len(store.get_executions()) == 2 * len(COMPONENTS)
  for node, key in [("Transform", "transform_graph"), ("RetrievalTrainer", "model"),
                    ("IndexBuilder", "index"), ("RankingTrainer", "model")]:
    assert second.output(node, key).id == first.output(node, key).id
  # The baseline resolved from MLMD is the first run's blessed model: the same artifact,
  # so the evaluator blesses it again, and the pusher serves the existing bundle.
  assert props(second.output("RetrievalEvaluator", "blessing"))["blessed"] == 1
  assert props(second.output("RankingEvaluator", "blessing"))["blessed"] == 1
  assert bundle_layout.versions(config.serving_dir) == [pushed["pushed_version"]]

  # An impossible threshold: the model is not blessed, nothing new is pushed.
  strict = PipelineConfig(data_dir=synthetic_dir, output_dir=config.output_dir,
                          **{**fast_pipeline, "retrieval_thresholds": {"hr_at_10": 1.01}})
  third = local_runner.run(strict, out=io.StringIO()).run
  blessing = props(third.output("RetrievalEvaluator", "blessing"))
  assert blessing["blessed"] == 0 and "hr_at_10" in blessing["reasons"]
  not_pushed = props(third.output("BundlePusher", "pushed_model"))
  assert not_pushed["pushed"] == 0 and "model_blessing" in not_pushed["not_pushed_reason"]
  assert bundle_layout.versions(config.serving_dir) == [pushed["pushed_version"]]
  assert load_latest_bundle(config.serving_dir).version == pushed["pushed_version"]

  # The popularity reference the other way: an untrained model (learning rate 0) does not
  # beat popularity on the same rows, and the refusal names that check.
  untrained = PipelineConfig(data_dir=synthetic_dir, output_dir=config.output_dir,
                             **{**fast_pipeline, "retrieval_thresholds": {},
                                "retrieval_hparams": {"epochs": 1, "learning_rate": 0.0}})
  fifth = local_runner.run(untrained, out=io.StringIO()).run
  blessing = props(fifth.output("RetrievalEvaluator", "blessing"))
  assert blessing["blessed"] == 0 and "vs popularity" in blessing["reasons"], blessing
  assert bundle_layout.versions(config.serving_dir) == [pushed["pushed_version"]]

  # The ranking bound the other way: an RMSE bound no model meets blocks the push too.
  strict_ranking = PipelineConfig(data_dir=synthetic_dir, output_dir=config.output_dir,
                                  **{**fast_pipeline, "ranking_rmse_bound": 0.1})
  fourth = local_runner.run(strict_ranking, out=io.StringIO()).run
  assert props(fourth.output("RankingEvaluator", "blessing"))["blessed"] == 0
  assert props(fourth.output("RetrievalEvaluator", "blessing"))["blessed"] == 1
  not_pushed = props(fourth.output("BundlePusher", "pushed_model"))
  assert not_pushed["pushed"] == 0 and "ranking_blessing" in not_pushed["not_pushed_reason"]
  assert bundle_layout.versions(config.serving_dir) == [pushed["pushed_version"]]


@pytest.mark.e2e
def test_anomalies_stop_the_run_before_transform(tmp_path, synthetic_data, fast_pipeline):
  data = synthetic.generate(n_users=60, n_movies=40, seed=3)
  data.users[0] = data.users[0].__class__(data.users[0].user_id, 150, "M", "writer", "12345")
  data_dir = synthetic.write(data, str(tmp_path / "data"))
  config = PipelineConfig(data_dir=data_dir, output_dir=str(tmp_path / "out"), **fast_pipeline)
  with pytest.raises(PipelineRunError) as err:
    local_runner.run(config, out=io.StringIO())
  assert err.value.component == "ValidationGate"
  assert "user_age" in str(err.value)
  executions = local_runner.metadata_store(config).get_executions()
  assert not any("Transform" in e.type or "Trainer" in e.type for e in executions)


@pytest.mark.e2e
@pytest.mark.parametrize("split,executors", [("temporal", "in_process"),
                                             ("last", "child_process")])
def test_an_empty_ratings_file_stops_the_run_with_its_name(tmp_path, synthetic_data, split,
                                                           executors, fast_pipeline):
  """Also when ExampleGen runs in a child process: its exception comes back as raised."""
  data_dir = synthetic.write(synthetic_data, str(tmp_path / "data"))
  open(os.path.join(data_dir, "u.data"), "w").close()
  config = PipelineConfig(data_dir=data_dir, output_dir=str(tmp_path / "out"),
                          split_method=split, executors=executors, **fast_pipeline)
  with pytest.raises(PipelineRunError) as err:
    local_runner.run(config, out=io.StringIO())
  assert err.value.component == "MovieLensExampleGen"
  assert isinstance(err.value.cause, layouts.MovieLensDataError)
  assert "u.data: no ratings could be read" in str(err.value)


def test_retrieval_training_with_a_row_filter_trains_on_the_ratings_it_accepts(pushed_run):
  """bench/second_stage_study.py's cross-fitting leaves folds of ratings out of retrieval
  training through `keep`: those are not counted as trained on, and training reads
  examples (user windows train every rating before a cutoff)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  from modules import retrieval_model, retrieval_trainer  # pylint: disable=g-import-not-at-top
  from modules.hparams import RetrievalHParams  # pylint: disable=g-import-not-at-top
  _, run, _ = pushed_run
  transformed = run.output("Transform", "transformed_examples").uri
  files = lambda split: os.path.join(transformed, f"Split-{split}", "*")
  tft_output = tft.TFTransformOutput(run.output("Transform", "transform_graph").uri)
  even = lambda ids: ids[retrieval_model.QUERY_SECONDS_FEATURE] % 2 == 0
  hparams = RetrievalHParams.from_dict({"epochs": 1, "batch_size": 128})
  _, summary = retrieval_trainer.train(files("train"), files("eval"), tft_output, hparams,
                                       keep=even)
  seconds = np.array([e.features.feature[F.TIMESTAMP].int64_list.value[0] for e in
                      read_examples(run.output("MovieLensExampleGen", "examples").uri,
                                    F.TRAIN_SPLIT)])
  assert 0 < (seconds % 2 == 0).sum() < len(seconds)
  assert summary["train_examples"] == (seconds % 2 == 0).sum()
  assert summary["held_out_for_ranking"] == (seconds % 2 == 1).sum()
  assert summary["feeding"] == retrieval_trainer.EXAMPLES
  assert retrieval_trainer.feeding_route(hparams) == retrieval_trainer.WINDOWS


def test_the_run_summary_says_what_the_run_recorded(pushed_run):
  """`movrec run`'s closing lines (run_cmd.summary_lines), against the run's artifacts as
  MLMD holds them and the bundle on disk."""
  from movrec import run_cmd  # pylint: disable=g-import-not-at-top
  from bundle import contract  # pylint: disable=g-import-not-at-top
  config, run, _ = pushed_run
  lines = run_cmd.summary_lines(local_runner.LocalRunResult(run, "run.log"), config, 61.04)
  by_label = {line.split()[0]: line for line in lines[1:]}
  assert lines[0].startswith(f"\nRun {run.run_id} finished in 61.0 s: "
                             f"{len(COMPONENTS)} components ({len(COMPONENTS)} executed")
  assert by_label["data"].endswith(f"{config.data_dir} (ml-100k, last split)")
  examples = props(run.output("MovieLensExampleGen", "examples"))
  assert (f"{examples['num_examples_train']:,} train / {examples['num_examples_eval']:,} eval"
          in by_label["ratings"])
  evaluation = props(run.output("RetrievalEvaluator", "evaluation"))
  assert by_label["retrieval"].startswith(
      f"  retrieval   HR@10 {evaluation['hr_at_10']:.3f}, "
      f"NDCG@10 {evaluation['ndcg_at_10']:.3f}")
  for label, node in (("retrieval", "RetrievalEvaluator"), ("index", "IndexBuilder"),
                      ("ranking", "RankingEvaluator"), ("two-stage", "TwoStageEvaluator")):
    blessing = props(run.output(node, "blessing"))
    verdict = ("BLESSED" if blessing["blessed"] else  # with the gate's reasons, if it gave any
               "NOT BLESSED" + (f" ({blessing['reasons']})" if blessing.get("reasons") else ""))
    assert by_label[label].endswith(f": {verdict}"), (by_label[label], blessing)
  rmse = ranking_eval_config.load_metrics(run.output("RankingEvaluator", "evaluation").uri)[""]
  assert f"eval RMSE {rmse[ranking_eval_config.RMSE]:.4f}" in by_label["ranking"]
  pushed = props(run.output("BundlePusher", "pushed_model"))
  destination = pushed[contract.PUSHED_DESTINATION]
  assert os.path.isdir(destination) and destination.startswith(config.serving_dir)
  assert by_label["pushed"] == f"  pushed      {destination}"
  assert by_label["full"] == "  full log    run.log"
