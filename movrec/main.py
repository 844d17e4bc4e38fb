"""movrec: the project's console tool.

  movrec run [--data-dir DIR]      run the pipeline locally (LocalDagRunner)
  movrec recommend --user 42 -k 10 recommend from the newest pushed bundle (--json)
  movrec similar --movie 50        movies nearest to a movie (--json)
  movrec serve [--port 8080]       HTTP service (POST /recommend, GET /similar, ...)
  movrec rollback VERSION          serve an older bundle version (--latest: the newest)
  movrec compile --image IMG ...   Kubeflow Pipelines v2 / Vertex AI pipeline JSON
  movrec submit | schedule ...     run it once / on a cron (--dry-run prints the request)
  movrec runs | artifacts | lineage ID | metrics     what the MLMD store holds (--json)
  movrec report [RUN]              a self-contained HTML page about a run
  movrec generate-data DIR         write synthetic MovieLens-shaped files (offline demo)
  movrec download [--dataset NAME] fetch and verify an official GroupLens archive

Data for `run`: --data-dir, else $MOVIELENS_DATA_DIR, else ml-100k in the download cache
(downloaded and verified on first use).
"""

import argparse
import sys
from typing import List, Optional

from modules.errors import MovrecError
from movrec import cluster_cmd, inspect_cmd, run_cmd, serve_cmd

COMMAND_GROUPS = (run_cmd, serve_cmd, cluster_cmd, inspect_cmd)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="movrec", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  for group in COMMAND_GROUPS:
    group.add_parsers(sub)
  return parser


def main(argv: Optional[List[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return args.func(args)
  except MovrecError as e:  # meant for the user (modules/errors.py); anything else is a bug
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    print(f"\nerror: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
