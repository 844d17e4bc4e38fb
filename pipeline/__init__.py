"""Pipeline definition, configuration, local runner and console tool."""
import os

# TensorFlow Recommenders needs Keras 2; this must be set before TensorFlow is imported
# (`import tfx` imports it). Child processes (Beam workers) inherit it.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
