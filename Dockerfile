# The pipeline image for Kubeflow Pipelines v2 / Vertex AI: the pinned stack plus this
# project, installed at build time (nothing is fetched when a component runs).
#   docker build -t REGISTRY/movrec-pipeline:TAG . && docker push REGISTRY/movrec-pipeline:TAG
#   movrec compile --image REGISTRY/movrec-pipeline:TAG ...
FROM python:3.10.13-slim

# Keras 2 for TensorFlow Recommenders, in every process the image starts (Beam workers too).
ENV TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /movrec
COPY constraints.txt setup.py pyproject.toml README.md ./
COPY pipeline/ pipeline/
COPY components/ components/
COPY modules/ modules/
COPY schemas/ schemas/
COPY serving/ serving/
COPY bundle/ bundle/
COPY movrec/ movrec/
COPY kubeflow/ kubeflow/
RUN pip install --no-cache-dir "pip==24.0" && \
    pip install --no-cache-dir -c constraints.txt . && \
    pip check && \
    python -c "import tfx, tensorflow_recommenders, scann, modules.retrieval_trainer"

# The compiled pipeline names the command (TFX's Kubeflow V2 executor entry point); this
# default makes `docker run IMAGE --help`-style debugging land in the same place.
ENTRYPOINT ["python", "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]
