"""movielens-tfx-recommender: a two-stage movie recommender as a TFX pipeline."""

from setuptools import find_packages, setup

# The stack that installs and imports together (see DEVELOPERS notes in README).
# Exact versions of every transitive dependency are in constraints.txt.
INSTALL_REQUIRES = [
    "tfx[kfp]==1.16.0",
    "tensorflow==2.16.2",
    "tf-keras~=2.16.0",
    "tensorflow-recommenders==0.7.7",
    "scann==1.3.2",
    "apache-beam[gcp]==2.60.0",
    "tensorflow-transform==1.16.0",
    "tensorflow-data-validation==1.16.1",
    "tensorflow-metadata~=1.16.0",
    "ml-metadata==1.16.0",
    "protobuf==3.20.3",
    "tensorflow-datasets==4.9.3",
    "kfp==2.5.0",
    "kfp-pipeline-spec==0.2.2",
    "tqdm>=4.60",
    "fastapi==0.162.5",  # the recommendation HTTP service (serving/http_service.py)
    "uvicorn==0.54.0",
    "PyMySQL==1.1.1",  # the run lock on a shared MySQL metadata store (pipeline/metadata_store.py)
]

setup(
    name="movielens-tfx-recommender",
    version="0.1.0",
    description="Two-stage (retrieval + ranking) movie recommender as an orchestrated TFX pipeline.",
    python_requires=">=3.9,<3.11",
    packages=find_packages(include=["pipeline", "pipeline.*", "kubeflow", "kubeflow.*", "components", "components.*", "schemas",
                                    "modules", "modules.*", "serving", "serving.*", "bundle", "bundle.*",
                                    "movrec", "movrec.*"]),
    package_data={"schemas": ["*/schema.pbtxt"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    # psutil: bench/scale.py samples the run's process tree (also a TensorFlow Datasets dependency).
    extras_require={"test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "psutil==7.2.2"]},
    entry_points={"console_scripts": ["movrec=movrec.main:main"]},
)
