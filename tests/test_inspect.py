"""MLMD inspection commands and the HTML report, on the store of a real pipeline run."""
import json
import os
import shutil
import subprocess

import ml_metadata as mlmd
import pytest

from movrec import main as cli
from pipeline import run_summary

pytestmark = pytest.mark.e2e  # reads the stores of real pipeline runs (`inspected`)


@pytest.fixture(scope="module", params=["sqlite", "mysql"])
def inspected(request):
  """(config, run) of a real run whose metadata is in SQLite (the default) or in a real
  MySQL server (`--connection-config`): every inspection test runs against both."""
  if request.param == "sqlite":
    config, run, _ = request.getfixturevalue("pushed_run")
  else:
    config, run = request.getfixturevalue("mysql_run")
  return config, run


@pytest.fixture(scope="module")
def store_args(inspected):
  config, _ = inspected
  where = (["--connection-config", config.metadata_connection_file]
           if config.metadata_connection_file else ["--metadata", config.metadata_path])
  return where + ["--pipeline-name", config.pipeline_name]


@pytest.fixture(scope="module")
def store(inspected):
  config, _ = inspected
  from pipeline import local_runner  # pylint: disable=g-import-not-at-top
  return local_runner.metadata_store(config)


def run_cli(capsys, *argv):
  code = cli.main(list(argv))
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def as_json(capsys, *argv):
  code, out, err = run_cli(capsys, *argv, "--json")
  assert code == 0, err
  return json.loads(out)


def test_runs_match_the_pipeline_run_contexts(capsys, store, store_args, inspected):
  config, first = inspected
  rows = as_json(capsys, "runs", *store_args)
  contexts = store.get_contexts_by_type("pipeline_run")
  assert [r["run_id"] for r in rows] == [c.name for c in sorted(
      contexts, key=lambda c: (c.create_time_since_epoch, c.id))]
  row = next(r for r in rows if r["run_id"] == first.run_id)
  assert row["status"] == "COMPLETE" and row["executed"] == len(first.components)
  assert row["components"] == len(store.get_executions_by_context(
      store.get_context_by_type_and_name("pipeline_run", first.run_id).id))
  code, text, _ = run_cli(capsys, "runs", *store_args)
  assert code == 0 and first.run_id in text and "COMPLETE" in text


def test_artifacts_filter_by_type_component_and_run(capsys, store, store_args, inspected):
  _, first = inspected
  models = as_json(capsys, "artifacts", *store_args, "--type", "Model")
  assert {m["id"] for m in models} == {a.id for a in store.get_artifacts_by_type("Model")}
  assert {m["producer"] for m in models} == {"RetrievalTrainer", "RankingTrainer"}
  index = as_json(capsys, "artifacts", *store_args, "--component", "IndexBuilder",
                  "--type", "movrec.RetrievalIndex")
  mlmd_index = store.get_artifacts_by_type("movrec.RetrievalIndex")
  assert [i["id"] for i in index] == [a.id for a in mlmd_index]
  assert index[0]["properties"]["recall_at_10"] == pytest.approx(
      mlmd_index[0].custom_properties["recall_at_10"].double_value)
  in_run = as_json(capsys, "artifacts", *store_args, "--run", first.run_id)
  expected = {a.id for c in first.components for outs in c.outputs.values() for a in outs}
  assert {a["id"] for a in in_run} == expected


def test_lineage_names_producer_inputs_and_consumers(capsys, store_args, inspected):
  _, first = inspected
  model = first.output("RetrievalTrainer", "model")
  data = as_json(capsys, "lineage", *store_args, str(model.id))
  # One execution made it; a later run that reused it from the cache (test_pipeline_e2e's)
  # lists itself as CACHED.
  (producer,) = [p for p in data["produced_by"] if p["state"] == "COMPLETE"]
  assert {p["state"] for p in data["produced_by"]} <= {"COMPLETE", "CACHED"}
  assert producer["component"] == "RetrievalTrainer"
  inputs = {i["key"]: i["id"] for i in producer["artifacts"]}
  assert inputs["transform_graph"] == first.output("Transform", "transform_graph").id
  consumers = {c["component"] for c in data["consumed_by"]}
  assert {"RetrievalEvaluator", "IndexBuilder", "BundlePusher"} <= consumers
  code, text, _ = run_cli(capsys, "lineage", *store_args, str(model.id))
  assert code == 0 and "produced by:" in text and "RetrievalTrainer" in text


def test_metrics_side_by_side_with_blessings(capsys, store_args, inspected):
  _, first = inspected
  rows = as_json(capsys, "metrics", *store_args)
  row = next(r for r in rows if r["run_id"] == first.run_id)
  evaluation = first.output("RetrievalEvaluator", "evaluation").custom_properties
  assert row["retrieval"]["hr_at_10"] == pytest.approx(
      evaluation["hr_at_10"].double_value)
  # Popularity, the reference the model had to beat, is shown beside it.
  assert row["retrieval"]["popularity"]["ndcg_at_10"] == pytest.approx(
      evaluation["popularity_ndcg_at_10"].double_value)
  assert row["retrieval"]["ndcg_at_10"] > row["retrieval"]["popularity"]["ndcg_at_10"]
  assert row["retrieval"]["blessed"] and row["index"]["blessed"] and row["ranking"]["blessed"]
  assert row["index"]["recall_at_10"] == 1.0
  assert 0.3 < row["ranking"]["rmse"] < 1.5
  # The two-stage figures as the TwoStageEvaluator recorded them, and its decision.
  two_stage = first.output("TwoStageEvaluator", "evaluation").custom_properties
  assert row["two_stage"]["two_stage_ndcg_at_10"] == pytest.approx(
      two_stage["two_stage_ndcg_at_10"].double_value)
  assert row["two_stage"]["retrieval_order_ndcg_at_10"] == pytest.approx(
      two_stage["retrieval_order_ndcg_at_10"].double_value)
  assert row["two_stage"]["blessed"] == (row["two_stage"]["two_stage_ndcg_at_10"] >
                                         row["two_stage"]["retrieval_order_ndcg_at_10"])
  assert row["pushed"]["pushed"] and row["pushed"]["version"]


@pytest.mark.parametrize("argv,message", [
    (["lineage", "999999"], "no artifact with id 999999"),
    (["report", "no-such-run"], "no run 'no-such-run'"),
    (["artifacts", "--type", "NoSuchType"], "no artifact matches"),
])
def test_bad_ids_get_a_clear_message(capsys, store_args, argv, message):
  code, _, err = run_cli(capsys, argv[0], *store_args, *argv[1:])
  assert code == 1 and message in err


def test_an_empty_store_gets_a_clear_message(capsys, tmp_path):
  code, _, err = run_cli(capsys, "runs", "--output-dir", str(tmp_path))
  assert code == 1 and "no metadata store" in err
  # A store that exists but holds no run of the pipeline.
  from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
  config = metadata_store_pb2.ConnectionConfig()
  config.sqlite.filename_uri = str(tmp_path / "empty.db")
  config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
  mlmd.MetadataStore(config)
  code, _, err = run_cli(capsys, "runs", "--metadata", str(tmp_path / "empty.db"))
  assert code == 1 and "has no run of pipeline" in err


def chromium():
  path = shutil.which("chromium") or shutil.which("chromium-browser")
  if not path:
    if os.environ.get("MOVREC_REQUIRE_BROWSER"):
      pytest.fail("chromium is required (.ci/run installs Debian's chromium package)")
    pytest.skip("Debian's chromium package is not installed")
  return path


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--enable-logging=stderr",
                  "--v=0"]


def test_report_renders_in_headless_chromium(capsys, tmp_path, store_args, inspected):
  _, first = inspected
  out = tmp_path / "report.html"
  code, printed, err = run_cli(capsys, "report", first.run_id, *store_args, "--out", str(out))
  assert code == 0, err
  page = out.read_text()
  assert "<script src" not in page and "http://" not in page.replace(
      'xmlns="http://www.w3.org/2000/svg"', "")  # self-contained: nothing to fetch
  for component in ("RetrievalTrainer", "IndexBuilder", "RankingEvaluator", "BundlePusher"):
    assert component in page
  assert "<th>popularity</th>" in page and "ndcg_at_10" in page  # the reference row's column
  assert "<th>two-stage</th>" in page and "<th>retrieval order</th>" in page
  assert "<th>movies rated before</th>" in page  # the two-stage figures by history length

  browser = chromium()
  profile = ["--user-data-dir=" + str(tmp_path / "profile")]
  dom = subprocess.run([browser, *CHROMIUM_FLAGS, *profile, "--dump-dom", out.as_uri()],
                       capture_output=True, text=True, timeout=120)
  assert 'data-rendered="ok"' in dom.stdout  # the page's script ran to the end
  assert "Uncaught" not in dom.stderr, dom.stderr[-2000:]

  shot = tmp_path / "report.png"
  done = subprocess.run([browser, *CHROMIUM_FLAGS, *profile, "--window-size=1280,2000",
                         f"--screenshot={shot}", out.as_uri()],
                        capture_output=True, text=True, timeout=120)
  assert shot.exists(), done.stderr[-2000:]
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = Image.open(shot).convert("L")
  assert image.size == (1280, 2000)
  low, high = image.getextrema()
  histogram = image.histogram()
  assert high - low > 100  # text and DAG boxes, not a blank page
  assert max(histogram) < 0.97 * sum(histogram)  # not one flat colour
