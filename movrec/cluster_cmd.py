"""movrec compile | submit | schedule: Kubeflow Pipelines v2 / Vertex AI."""

import argparse
import json
import os

from components.movielens_example_gen import layouts
from modules.errors import ConfigError
from movrec import paths
from pipeline import config as config_lib


def cmd_compile(args) -> int:
  cfg = config_lib.PipelineConfig(
      data_dir=args.data_dir, output_dir=args.output_dir, pipeline_name=args.pipeline_name,
      layout=args.layout, user_demographics=args.demographics,
      extra_beam_args=tuple(args.beam_arg or ()), span_pattern=args.span_pattern,
      warm_start=args.warm_start,
      retrieval_hparams=paths.key_values(args.retrieval, "--retrieval"),
      ranking_hparams=paths.key_values(args.ranking, "--ranking"),
      **paths.given(rolling_spans=args.rolling_spans))
  with paths.quiet_imports(args):
    from kubeflow import runner  # pylint: disable=g-import-not-at-top
  compiled = runner.compile_pipeline(cfg, args.output, image=args.image)
  tasks = runner.component_ids(compiled)
  params = sorted(compiled["pipelineSpec"]["root"].get("inputDefinitions", {})
                  .get("parameters", {}))
  print(f"wrote {args.output} ({os.path.getsize(args.output):,} bytes): {len(tasks)} tasks, "
        f"image {args.image}, pipeline root {cfg.pipeline_root}")
  print(f"runtime parameters: {', '.join(params)}")
  return 0


def _send(args, cron=None) -> int:
  with paths.quiet_imports(args):
    from kubeflow import runner  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(args.compiled):
    raise ConfigError(f"{args.compiled} does not exist; run `movrec compile` first")
  target = runner.ClusterTarget(project=args.project, region=args.region,
                                kfp_host=args.kfp_host, service_account=args.service_account)
  with open(args.compiled) as f:
    root = json.load(f)["runtimeConfig"]["gcsOutputDirectory"]
  values = runner.parameter_values(paths.key_values(args.param, "--param"))
  request = runner.build_request(args.compiled, root, target, values, cron)
  if args.dry_run:
    print(json.dumps(request, indent=2))
    return 0
  print(f"submitted: {runner.send(request)}")
  return 0


def cmd_submit(args) -> int:
  return _send(args)


def cmd_schedule(args) -> int:
  return _send(args, cron=args.cron)


def add_parsers(sub) -> None:
  comp = sub.add_parser("compile", help="compile for Kubeflow Pipelines v2 / Vertex AI")
  comp.add_argument("--output", default="pipeline.json")
  comp.add_argument("--image", required=True, help="the pipeline image (see Dockerfile)")
  comp.add_argument("--data-dir", required=True, help="e.g. gs://bucket/ml-100k (the "
                    "default of the data_dir runtime parameter)")
  comp.add_argument("--output-dir", required=True, help="e.g. gs://bucket/movrec: pipeline "
                    "root and serving bundles go under it")
  comp.add_argument("--pipeline-name", default=config_lib.DEFAULT_PIPELINE_NAME)
  comp.add_argument("--layout", required=True, choices=sorted(layouts.LAYOUTS))
  comp.add_argument("--demographics", action=argparse.BooleanOptionalAction, default=None,
                    help="the data has user demographics (default: read from the files)")
  comp.add_argument("--beam-arg", action="append", help="e.g. --beam-arg=--runner=DataflowRunner")
  comp.add_argument("--span-pattern", help="e.g. 'span-{SPAN}' (see `run --help`)")
  comp.add_argument("--rolling-spans", type=int)
  comp.add_argument("--warm-start", action="store_true",
                    help="start both Trainers from the last blessed models' weights")
  comp.add_argument("--retrieval", action="append", metavar="NAME=VALUE")
  comp.add_argument("--ranking", action="append", metavar="NAME=VALUE")
  comp.set_defaults(func=cmd_compile)

  def cluster_args(p):
    p.add_argument("--compiled", default="pipeline.json")
    p.add_argument("--project", help="Google Cloud project (Vertex AI Pipelines)")
    p.add_argument("--region", default="us-central1")
    p.add_argument("--kfp-host", help="a Kubeflow Pipelines endpoint instead of Vertex AI")
    p.add_argument("--service-account")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="runtime parameter value, e.g. data_dir=gs://b/ml-1m; repeatable")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and print the request; send nothing")
    p.add_argument("--output-dir", default=None)

  submit = sub.add_parser("submit", help="run the compiled pipeline once on a cluster")
  cluster_args(submit)
  submit.set_defaults(func=cmd_submit)
  schedule = sub.add_parser("schedule", help="run the compiled pipeline on a cron schedule")
  cluster_args(schedule)
  schedule.add_argument("--cron", required=True, help="e.g. '0 3 * * 1' (Mondays 03:00)")
  schedule.set_defaults(func=cmd_schedule)
