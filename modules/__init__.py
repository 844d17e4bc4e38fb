"""User code that TFX loads by import path (preprocessing_fn, run_fns) and shared feature names."""
import os

# TensorFlow Recommenders needs Keras 2; this must be set before TensorFlow is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
