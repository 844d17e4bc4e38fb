"""The serving-bundle contract, shared by the writer and the readers.

The BundlePusher (components/) writes bundles and the IndexBuilder builds the index they
hold; serving/ reads them. Both sides import this package, and it imports neither (of
modules/, only the error type): what a bundle holds, how its files are verified and
pinned (layout.py), how a ScaNN index is saved and loaded (scann_index.py), the user
table's record and the PushedModel artifact's property names (contract.py).
"""
import os

# TensorFlow Recommenders needs Keras 2: set before TensorFlow is imported, which any
# module of this package may do (child processes, e.g. Beam workers, inherit it).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
