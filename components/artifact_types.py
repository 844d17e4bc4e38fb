"""The project's own artifact types.

TYPE_NAME has the `pkg.TypeName` form Vertex AI Pipelines requires of custom types, and
the classes live in the installed package so the pipeline image can import them. The
Kubeflow V2 entry point imports a custom type by its TYPE_NAME (`movrec.RetrievalIndex`
is `movrec/__init__.py`'s lazy attribute).
"""

from tfx.types import artifact


class RetrievalIndex(artifact.Artifact):
  """A ScaNN searcher over candidate embeddings, with the candidates' ids and metadata.

  Files: see bundle/scann_index.py. Custom properties record the
  catalogue size (num_candidates), the search mode, the measured recall@10 against exact
  search, queries per second and build seconds. (No typed PROPERTIES: the Kubeflow V2
  compiler only accepts them on types it has a schema for.)
  """
  TYPE_NAME = "movrec.RetrievalIndex"
