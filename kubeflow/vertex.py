"""Beyond one machine on Google Cloud: both Trainers as Vertex AI Training jobs, every
Beam step on Dataflow. Used by `movrec compile --vertex-training / --dataflow`.

The Trainers become TFX's Google Cloud Trainer (tfx.extensions.google_cloud_ai_platform),
whose executor submits a Vertex CustomJob that runs TFX's own Trainer executor, with the
same run_fn, in the pipeline image. Beam steps get DataflowRunner options with the same
image as the workers' SDK container, so workers import this package and its Keras setting.
"""

import dataclasses
from typing import Dict, List, Optional

from tfx.extensions.google_cloud_ai_platform import constants as gcp_constants
from tfx.extensions.google_cloud_ai_platform.trainer import executor as gcp_trainer

from modules.errors import ConfigError

DEFAULT_MACHINE_TYPE = "n1-standard-8"


@dataclasses.dataclass
class VertexTraining:
  project: str
  region: str
  machine_type: str = DEFAULT_MACHINE_TYPE
  accelerator: Optional[str] = None  # e.g. "NVIDIA_TESLA_T4" or "NVIDIA_TESLA_T4:2"

  def __post_init__(self):
    if not self.project or not self.region:
      raise ConfigError("Vertex AI Training needs --project and --region")

  def machine_spec(self) -> Dict:
    spec = {"machine_type": self.machine_type}
    if self.accelerator:
      kind, _, count = self.accelerator.partition(":")
      if count and not count.isdigit():
        raise ConfigError(f"--training-accelerator {self.accelerator!r}: expected TYPE or "
                          "TYPE:COUNT, e.g. NVIDIA_TESLA_T4:1")
      spec.update(accelerator_type=kind, accelerator_count=int(count or 1))
    return spec

  def trainer_custom_config(self, image: str) -> Dict:
    """The custom_config keys TFX's Google Cloud Trainer reads (a Vertex CustomJob)."""
    job = {"project": self.project, "job_spec": {"worker_pool_specs": [{
        "machine_spec": self.machine_spec(), "replica_count": 1,
        "container_spec": {"image_uri": image}}]}}
    return {gcp_trainer.TRAINING_ARGS_KEY: job, gcp_constants.ENABLE_VERTEX_KEY: True,
            gcp_constants.VERTEX_REGION_KEY: self.region}


def dataflow_beam_args(project: str, region: str, output_dir: str, image: str) -> List[str]:
  """Beam options that send every Beam step to Dataflow, workers running `image`."""
  if not output_dir.startswith("gs://"):
    raise ConfigError(f"Dataflow needs a gs:// --output-dir for its temporary files, not "
                      f"{output_dir!r}")
  if not project or not region:
    raise ConfigError("Dataflow needs --project and --region")
  return ["--runner=DataflowRunner", f"--project={project}", f"--region={region}",
          f"--temp_location={output_dir.rstrip('/')}/beam-temp",
          f"--sdk_container_image={image}", "--sdk_location=container"]
