"""MovieLensExampleGen's executor alone on a data folder: seconds and peak resident memory.

The first step of a run, measured without the rest (a whole 10M-rating run takes well
over an hour on 2 cores): in-memory Beam as `movrec run` uses it, split `last`, output
into a fresh folder. For the 10M figure in BENCHMARKS.md ("Scale"):

  .venv/bin/movrec generate-data outputs/bench-scale/data-10m --layout ml-1m \\
      --users 286000 --movies 39000
  .venv/bin/python -m bench.example_gen_alone outputs/bench-scale/data-10m
"""

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("data_dir")
  parser.add_argument("--layout", default="ml-1m")
  args = parser.parse_args(argv)
  from tfx.dsl.components.base import base_beam_executor  # pylint: disable=g-import-not-at-top
  from tfx.proto import example_gen_pb2  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from tfx.utils import proto_utils  # pylint: disable=g-import-not-at-top
  from components.movielens_example_gen import executor, splits  # pylint: disable=g-import-not-at-top
  from pipeline import config as config_lib  # pylint: disable=g-import-not-at-top

  out_dir = tempfile.mkdtemp(prefix="example_gen_alone-")
  try:
    examples, candidates = standard_artifacts.Examples(), standard_artifacts.Examples()
    examples.uri = os.path.join(out_dir, "examples")
    candidates.uri = os.path.join(out_dir, "candidates")
    input_config = example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name="single_split", pattern="*")])
    properties = dict(
        input_base=args.data_dir, input_config=proto_utils.proto_to_json(input_config),
        layout=args.layout, split_method=splits.SPLIT_LAST, train_fraction=0.8,
        split_seed=42, temporal_cutoff=0, eval_per_user=1, skip_bad_rows=0,
        output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP)
    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=config_lib.direct_runner_args(setup_file=None))
    started = time.monotonic()
    executor.Executor(context).Do({}, {executor.EXAMPLES_KEY: [examples],
                                       executor.CANDIDATES_KEY: [candidates]}, properties)
    seconds = time.monotonic() - started
    counts = {k: v.int_value for k, v in examples.mlmd_artifact.custom_properties.items()
              if k.startswith("num_examples_")}
    print(f"MovieLensExampleGen on {args.data_dir}: {seconds:.1f} s, peak resident "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB, {counts}")
  finally:
    shutil.rmtree(out_dir, ignore_errors=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
