"""Benchmarks: they print figures; nothing here is a test."""
import os

# TensorFlow Recommenders needs Keras 2: set before TensorFlow is imported, which any
# module of this package may do (child processes, e.g. Beam workers, inherit it).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
