"""movrec recommend | similar | serve | rollback: the pushed bundles."""

import json
import os
import sys

from movrec import paths
from pipeline import config as config_lib

ITEM_WIDTHS = {"movie_id": 8, "title": 48, "genres": 28}


def print_items(items, columns) -> None:
  print("  ".join(f"{c:<{ITEM_WIDTHS.get(c, 10)}}" for c in ["#"] + columns))
  for rank, item in enumerate(items, 1):
    cells = [f"{rank:<10}"]
    for c in columns:
      value = item.get(c, "")
      text = (f"{value:.3f}" if isinstance(value, float) else
              "|".join(value) if isinstance(value, list) else str(value))
      width = ITEM_WIDTHS.get(c, 10)
      cells.append(f"{text[:width]:<{width}}")
    print("  ".join(cells))


def load_recommender(args):
  """The newest valid (or pinned) bundle's Recommender; says so when it is degraded."""
  with paths.quiet_imports(args):
    from serving import recommender  # pylint: disable=g-import-not-at-top
  live = recommender.LiveRecommender(paths.serving_dir(args))
  health = live.health()
  if health["status"] != "ok":
    print(f"warning: serving bundle {health['version']}: {health['reason']}", file=sys.stderr)
  return live.current


def cmd_recommend(args) -> int:
  result = load_recommender(args).recommend(args.user, k=args.k, candidates=args.candidates,
                                            as_of=args.as_of, order_by=args.order_by)
  if args.json:
    print(json.dumps(result, indent=2))
    return 0
  as_of = f", as of {args.as_of}" if args.as_of is not None else ""
  print(f"user {args.user}: {result['path']} (bundle {result['version']}{as_of}, "
        f"ordered by {result.get('order_by', 'popularity')})")
  if result.get("order_fallback"):
    print(f"  not by ranking score: {result['order_fallback']}")
  columns = ["movie_id", "title", "genres", "ranking_score", "retrieval_score",
             "predicted_rating"]
  print_items(result["items"], [c for c in columns
                                if any(c in i for i in result["items"]) or c == "movie_id"])
  return 0


def cmd_similar(args) -> int:
  result = load_recommender(args).similar(args.movie, k=args.k)
  if args.json:
    print(json.dumps(result, indent=2))
    return 0
  print(f"movies like {result['title']} ({args.movie}), bundle {result['version']}:")
  print_items(result["items"], ["movie_id", "title", "genres", "score"])
  return 0


def cmd_serve(args) -> int:
  # With --workers, this process only supervises: it never imports TensorFlow.
  from serving import exposure  # pylint: disable=g-import-not-at-top
  token = os.environ.get(config_lib.ENV_API_TOKEN)
  if args.token_file:
    with open(args.token_file) as f:
      token = f.read().strip()
  exposure.check_exposure(args.host, token)
  if args.workers < 1:
    print(f"--workers must be at least 1, not {args.workers}", file=sys.stderr)
    return 2
  serving_dir = paths.serving_dir(args)
  print(f"serving {serving_dir} on http://{args.host}:{args.port} "
        f"(POST /recommend, GET /similar, /healthz, /metadata, /metrics"
        f"{', /docs' if args.docs else ''}; {'bearer token required' if token else 'no token'})")
  if args.workers == 1:
    with paths.quiet_imports(args):
      from serving import http_service  # pylint: disable=g-import-not-at-top
    http_service.serve(serving_dir, host=args.host, port=args.port, token=token, docs=args.docs)
    return 0
  from serving import workers  # pylint: disable=g-import-not-at-top
  return workers.serve(serving_dir, args.workers, host=args.host, port=args.port, token=token,
                       docs=args.docs)


def cmd_rollback(args) -> int:
  from bundle import layout  # pylint: disable=g-import-not-at-top
  serving_dir = paths.serving_dir(args)
  if args.latest:
    layout.pin(serving_dir, None)
    print(f"{serving_dir}: unpinned; services move to the newest valid version")
    return 0
  layout.verify(layout.version_dir(serving_dir, args.version))
  layout.pin(serving_dir, args.version)
  print(f"{serving_dir}: pinned version {args.version}; running services switch to it "
        "at their next poll (undo: movrec rollback --latest)")
  return 0


def add_parsers(sub) -> None:
  def serving_args(p):
    p.add_argument("--serving-dir", help="bundles directory (default: "
                   "<output-dir>/serving/<pipeline-name>)")
    p.add_argument("--output-dir")
    p.add_argument("--pipeline-name", default=config_lib.DEFAULT_PIPELINE_NAME)

  rec = sub.add_parser("recommend", help="top-k movies for a user from the newest bundle")
  rec.add_argument("--user", required=True)
  rec.add_argument("-k", type=int, default=10)
  rec.add_argument("--candidates", type=int, default=100,
                   help="retrieved, then ordered by the second stage")
  rec.add_argument("--order-by", choices=["ranking_score", "retrieval_score", "predicted_rating"],
                   help="ordering of the top k (default: ranking score when the bundle has "
                   "a sequence scorer, else retrieval score; predicted rating measured worse "
                   "for next-item)")
  rec.add_argument("--as-of", type=int, metavar="UNIX_SECONDS", help="backtest: answer as "
                   "of this time, from the user's ratings made before it only")
  rec.add_argument("--json", action="store_true")
  serving_args(rec)
  rec.set_defaults(func=cmd_recommend)

  sim = sub.add_parser("similar", help="movies nearest to a movie (item-to-item)")
  sim.add_argument("--movie", required=True)
  sim.add_argument("-k", type=int, default=10)
  sim.add_argument("--json", action="store_true")
  serving_args(sim)
  sim.set_defaults(func=cmd_similar)

  srv = sub.add_parser("serve", help="HTTP recommendation service")
  srv.add_argument("--host", default="127.0.0.1", help="loopback by default")
  srv.add_argument("--port", type=int, default=8080)
  srv.add_argument("--token-file", help=f"file holding the bearer token callers must send "
                   f"(or set ${config_lib.ENV_API_TOKEN}); required to bind beyond loopback")
  srv.add_argument("--docs", action="store_true", help="serve the OpenAPI docs at /docs")
  srv.add_argument("--workers", type=int, default=1, help="processes answering on the port "
                   "(each loads the bundle; 2 on 2 cores served ~1.5x the requests of 1)")
  serving_args(srv)
  srv.set_defaults(func=cmd_serve)

  rb = sub.add_parser("rollback", help="serve an older bundle version (pin), or the newest again")
  which = rb.add_mutually_exclusive_group(required=True)
  which.add_argument("version", nargs="?", type=int, help="the version to serve")
  which.add_argument("--latest", action="store_true", help="unpin: serve the newest valid")
  serving_args(rb)
  rb.set_defaults(func=cmd_rollback)
