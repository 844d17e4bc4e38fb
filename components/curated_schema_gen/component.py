"""CuratedSchemaGen: ImportSchemaGen whose cache key includes the schema's content.

TFX's ImportSchemaGen caches on the schema *path*: after an edit to schemas/*.pbtxt the
next run would reuse the old schema. This subclass adds the file's SHA-256 as an
execution parameter (ignored by the executor) so an edited schema is imported again.
"""

from tfx import types
from tfx.components.schema_gen.import_schema_gen import component as import_schema_gen
from tfx.types import component_spec
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs

from components import fingerprint


class CuratedSchemaGenSpec(types.ComponentSpec):
  PARAMETERS = {
      **standard_component_specs.ImportSchemaGenSpec.PARAMETERS,
      "schema_sha256": component_spec.ExecutionParameter(type=str),
  }
  INPUTS = {}
  OUTPUTS = standard_component_specs.ImportSchemaGenSpec.OUTPUTS


class CuratedSchemaGen(import_schema_gen.ImportSchemaGen):
  """Imports a curated schema.pbtxt; re-imports when its content changes."""

  SPEC_CLASS = CuratedSchemaGenSpec

  def __init__(self, schema_file: str, executor_path: str = None):  # pylint: disable=super-init-not-called
    """schema_file: the local file (fingerprinted); executor_path: where the executor
    reads the same file if elsewhere (e.g. inside the pipeline image on Kubeflow)."""
    spec = CuratedSchemaGenSpec(
        schema_file=executor_path or schema_file,
        schema_sha256=fingerprint.file_sha256(schema_file),
        schema=types.Channel(type=standard_artifacts.Schema))
    super(import_schema_gen.ImportSchemaGen, self).__init__(spec=spec)
