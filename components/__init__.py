"""Custom TFX components of the movie recommender."""
import os

# TensorFlow Recommenders needs Keras 2; this must be set before TensorFlow is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
