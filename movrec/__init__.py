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
