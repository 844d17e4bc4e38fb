"""Test session setup: Keras 2 before TensorFlow loads; shared synthetic data."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # pylint: disable=g-import-not-at-top

from components.movielens_example_gen import synthetic  # pylint: disable=g-import-not-at-top


@pytest.fixture(scope="session")
def synthetic_data():
  return synthetic.generate(n_users=120, n_movies=80, seed=7)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory, synthetic_data):
  return synthetic.write(synthetic_data, str(tmp_path_factory.mktemp("ml-synthetic")))
