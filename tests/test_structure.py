"""The project's structure: imports between top-level packages go one way only."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("bundle", "components", "kubeflow", "modules", "movrec", "pipeline", "schemas",
            "serving")
# Allowed direction: a package may import only those listed after it here
# (bench/ and tests/ sit on top and may import anything).
LAYERS = {
    "movrec": {"pipeline", "serving", "kubeflow", "components", "modules", "bundle", "schemas"},
    "kubeflow": {"pipeline", "components", "modules", "bundle", "schemas"},
    "pipeline": {"components", "modules", "bundle", "schemas"},
    "serving": {"modules", "bundle"},
    "components": {"modules", "bundle", "schemas"},
    "modules": set(),
    "bundle": {"modules"},  # its error type only (modules/errors.py)
    "schemas": set(),
}


def imports_of(package):
  """{imported top-level package: [file:line, ...]} of every import in `package`,
  including those inside functions."""
  found = {}
  for dirpath, _, files in os.walk(os.path.join(ROOT, package)):
    for name in files:
      if not name.endswith(".py"):
        continue
      path = os.path.join(dirpath, name)
      with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
          modules = [node.module]
        else:
          continue
        for module in modules:
          top = module.split(".")[0]
          if top in PACKAGES and top != package:
            found.setdefault(top, []).append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
  return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_the_layers_below_it(package):
  wrong = {top: where for top, where in imports_of(package).items()
           if top not in LAYERS[package]}
  assert not wrong, f"{package} must not import {sorted(wrong)}: {wrong}"


def test_the_import_graph_has_no_cycle():
  graph = {p: set(imports_of(p)) for p in PACKAGES}
  visiting, done = set(), set()

  def visit(node, path):
    assert node not in visiting, f"import cycle: {' -> '.join(path + [node])}"
    if node in done:
      return
    visiting.add(node)
    for child in sorted(graph[node]):
      visit(child, path + [node])
    visiting.discard(node)
    done.add(node)

  for package in PACKAGES:
    visit(package, [])


def test_no_console_module_is_over_250_lines():
  for name in os.listdir(os.path.join(ROOT, "movrec")):
    if name.endswith(".py"):
      with open(os.path.join(ROOT, "movrec", name), encoding="utf-8") as f:
        assert len(f.readlines()) <= 250, name


def test_a_default_changed_in_the_config_reaches_the_compiled_pipeline(monkeypatch, tmp_path,
                                                                     synthetic_dir):
  """`movrec run` passes only the flags given: every other value is PipelineConfig's."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from movrec import main, run_cmd  # pylint: disable=g-import-not-at-top
  from pipeline import config as config_lib  # pylint: disable=g-import-not-at-top
  from pipeline.pipeline import create_pipeline  # pylint: disable=g-import-not-at-top

  @dataclasses.dataclass
  class Changed(config_lib.PipelineConfig):
    index_min_recall: float = 0.5
    ranking_rmse_bound: float = 1.7
    split_method: str = "random"

  monkeypatch.setattr(config_lib, "PipelineConfig", Changed)
  args = main.build_parser().parse_args(["run", "--output-dir", str(tmp_path)])
  config = run_cmd.config_from_args(args, synthetic_dir)
  nodes = {node.id: node for node in create_pipeline(config).components}
  assert nodes["IndexBuilder"].exec_properties["min_recall"] == 0.5
  assert nodes["MovieLensExampleGen"].exec_properties["split_method"] == "random"
  assert "1.7" in str(nodes["RankingEvaluator"].exec_properties["eval_config"])
  # A flag given overrides the config.
  args = main.build_parser().parse_args(["run", "--index-min-recall", "0.9"])
  assert run_cmd.config_from_args(args, synthetic_dir).index_min_recall == 0.9
