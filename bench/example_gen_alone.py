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
  from components.movielens_example_gen import executor  # pylint: disable=g-import-not-at-top
  from pipeline import config as config_lib  # pylint: disable=g-import-not-at-top

  out_dir = tempfile.mkdtemp(prefix="example_gen_alone-")
  try:
    started = time.monotonic()
    examples, _ = executor.run_outside_pipeline(
        args.data_dir, out_dir, args.layout,
        beam_pipeline_args=config_lib.direct_runner_args(setup_file=None))
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
