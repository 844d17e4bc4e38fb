"""ValidationGate: fail the run, naming each feature and reason, when data has anomalies.

TFX's ExampleValidator records anomalies (and a per-split `blessed` flag) but lets the
pipeline go on. Transform and the Trainers are made downstream of this gate, so bad data
stops training, on every runner (LocalDagRunner and Kubeflow/Vertex alike).
"""

import os
from typing import List

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.utils import io_utils

from modules.errors import MovrecError

# ExampleValidator writes each split's anomalies to this file under Split-<name>/.
ANOMALIES_FILE = "SchemaDiff.pb"


class DataAnomaliesError(MovrecError, RuntimeError):
  """The data does not match its curated schema; the message lists every anomaly."""


def describe_anomalies(anomalies: types.Artifact) -> List[str]:
  """One line per anomaly: '<split>: feature <name>: <description>'."""
  lines = []
  for split in artifact_utils.decode_split_names(anomalies.split_names):
    path = os.path.join(artifact_utils.get_split_uri([anomalies], split), ANOMALIES_FILE)
    proto = anomalies_pb2.Anomalies()
    proto.ParseFromString(io_utils.read_bytes_file(path))
    for feature, info in sorted(proto.anomaly_info.items()):
      lines.append(f"{split}: feature {feature!r}: {info.short_description} "
                   f"({info.description})")
    if proto.HasField("dataset_anomaly_info"):
      info = proto.dataset_anomaly_info
      lines.append(f"{split}: dataset: {info.short_description} ({info.description})")
  return lines


@component
def ValidationGate(  # pylint: disable=invalid-name
    ratings_anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
    candidate_anomalies: InputArtifact[standard_artifacts.ExampleAnomalies]) -> None:
  """Raises DataAnomaliesError if any split of the ratings or candidates has an anomaly."""
  problems = [f"ratings {line}" for line in describe_anomalies(ratings_anomalies)]
  problems += [f"candidates {line}" for line in describe_anomalies(candidate_anomalies)]
  if problems:
    raise DataAnomaliesError(
        f"{len(problems)} data anomalies against the curated schemas (see "
        f"{ratings_anomalies.uri} and {candidate_anomalies.uri}); training stopped:\n  " +
        "\n  ".join(problems) +
        "\nFix the data, or update the schema in schemas/ if the change is intended.")
