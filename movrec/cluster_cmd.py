"""movrec compile | submit | schedule | run-compiled: Kubeflow Pipelines v2 / Vertex AI."""

import argparse
import json
import os

from components.movielens_example_gen import layouts
from kubeflow import compiled_spec
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
    from kubeflow import runner, vertex  # pylint: disable=g-import-not-at-top
  training = (vertex.VertexTraining(args.project, args.region,
                                    accelerator=args.training_accelerator,
                                    **paths.given(machine_type=args.training_machine_type))
              if args.vertex_training else None)
  compiled = runner.compile_pipeline(
      cfg, args.output, image=args.image, vertex_training=training,
      dataflow=(args.project, args.region) if args.dataflow else None)
  tasks = runner.component_ids(compiled)
  params = sorted(compiled_spec.declared_parameters(compiled))
  print(f"wrote {args.output} ({os.path.getsize(args.output):,} bytes): {len(tasks)} tasks, "
        f"image {args.image}, pipeline root {cfg.pipeline_root}")
  print(f"runtime parameters: {', '.join(params)}")
  if training:
    print(f"Trainers: Vertex AI Training on {training.machine_spec()} in {args.region} "
          "(hyperparameters fixed at compile time)")
  if args.dataflow:
    print(f"Beam steps: Dataflow in {args.project} / {args.region}, workers on {args.image}")
  return 0


def _send(args, cron=None) -> int:
  with paths.quiet_imports(args):
    from kubeflow import runner  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(args.compiled):
    raise ConfigError(f"{args.compiled} does not exist; run `movrec compile` first")
  target = runner.ClusterTarget(project=args.project, region=args.region,
                                kfp_host=args.kfp_host, service_account=args.service_account)
  with open(args.compiled) as f:
    spec = json.load(f)
  root = spec["runtimeConfig"]["gcsOutputDirectory"]
  values = runner.parameter_values(paths.key_values(args.param, "--param"),
                                   list(compiled_spec.declared_parameters(spec)))
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


def cmd_run_compiled(args) -> int:
  with paths.quiet_imports(args):
    from kubeflow import local_launcher, runner  # pylint: disable=g-import-not-at-top
    from pipeline import metadata_store  # pylint: disable=g-import-not-at-top
  spec = compiled_spec.load(args.compiled)
  # Checked as `submit` checks them (names, types, hyperparameter keys).
  values = runner.parameter_values(paths.key_values(args.param, "--param"),
                                   list(compiled_spec.declared_parameters(spec)))
  overrides = {name: str(value) for name, value in values.items()}
  if args.data_dir:
    overrides["data_dir"] = os.path.abspath(args.data_dir)
  root = args.pipeline_root or spec["runtimeConfig"]["gcsOutputDirectory"]
  metadata_path = args.metadata or os.path.join(root, local_launcher.DEFAULT_METADATA)
  connection = (metadata_store.load_connection_config(args.connection_config)
                if args.connection_config else metadata_store.sqlite_config(metadata_path))
  with metadata_store.exclusive(connection):
    store = metadata_store.open_store(connection)
    return _report(local_launcher.run_compiled(args.compiled, store, overrides, root,
                                               parallel=args.parallel))


def _report(run) -> int:
  for task, blessed in sorted(run.blessings().items()):
    print(f"{task}: {'blessed' if blessed else 'NOT blessed'}")
  print(f"run {run.run_id} complete; outputs and each task's log under {run.run_root}")
  return 0


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
  comp.add_argument("--vertex-training", action="store_true",
                    help="run both Trainers as Vertex AI Training jobs (needs --project)")
  comp.add_argument("--training-machine-type", help="default: kubeflow/vertex.py's")
  comp.add_argument("--training-accelerator", metavar="TYPE[:COUNT]",
                    help="e.g. NVIDIA_TESLA_T4:1 (default: none)")
  comp.add_argument("--dataflow", action="store_true",
                    help="run every Beam step on Dataflow (needs --project and a gs:// "
                         "--output-dir)")
  comp.add_argument("--project", help="Google Cloud project of --vertex-training / --dataflow")
  comp.add_argument("--region", default="us-central1")
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

  local = sub.add_parser("run-compiled", help="run a compiled pipeline spec on this machine, "
                         "with the container command lines it names")
  local.add_argument("compiled", help="the JSON `movrec compile` wrote")
  local.add_argument("--data-dir", help="value of the data_dir runtime parameter")
  local.add_argument("--param", action="append", metavar="NAME=VALUE",
                     help="another runtime parameter value; repeatable")
  local.add_argument("--pipeline-root", help="default: the spec's pipeline root")
  local.add_argument("--metadata", help="SQLite store the run records into and resolvers "
                     "query (default: metadata.db in the pipeline root)")
  local.add_argument("--connection-config", help="a text-format ml_metadata "
                     "ConnectionConfig (e.g. MySQL) instead of --metadata")
  local.add_argument("--parallel", type=int, default=0, metavar="N",
                     help="containers at once, of the tasks whose inputs are ready "
                     "(default: one per core; 1: one task at a time)")
  local.set_defaults(func=cmd_run_compiled)

  submit = sub.add_parser("submit", help="run the compiled pipeline once on a cluster")
  cluster_args(submit)
  submit.set_defaults(func=cmd_submit)
  schedule = sub.add_parser("schedule", help="run the compiled pipeline on a cron schedule")
  cluster_args(schedule)
  schedule.add_argument("--cron", required=True, help="e.g. '0 3 * * 1' (Mondays 03:00)")
  schedule.set_defaults(func=cmd_schedule)
