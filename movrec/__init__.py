"""movrec, the console tool (`movrec ...` or `python -m movrec ...`): a thin dispatcher
(main.py) over one module per group of commands: run_cmd (run, generate-data,
download), serve_cmd (recommend, similar, serve, rollback), inspect_cmd (runs,
artifacts, lineage, metrics, report), cluster_cmd (compile, submit, schedule).

It depends on pipeline/, serving/ and kubeflow/; none of them depends on it.
"""

import os

# Before anything imports TensorFlow: Keras 2 for TFRS, and TensorFlow's C++ logs quiet.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def __getattr__(name):
  """`movrec.RetrievalIndex`: the Kubeflow V2 entry point imports a custom artifact class
  by its TYPE_NAME, `movrec.RetrievalIndex` (Vertex requires `pkg.TypeName`). Imported
  lazily so the console tool starts without TFX."""
  if name == "RetrievalIndex":
    from components.artifact_types import RetrievalIndex  # pylint: disable=g-import-not-at-top
    return RetrievalIndex
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
