"""TFX Trainer `run_fn` of the ranking model, and its exported signatures.

The SavedModel under the serving model directory (what TFX's Evaluator and the Pusher use):

  serving_default(examples)    serialized raw tf.Examples -> {"predictions": [n, 1]}
  transform_features(examples) serialized raw tf.Examples -> transformed features (TFMA)
  serve_features(user_id, [user_age, user_gender, user_occupation, user_zip_code,]
                 timestamp, movie_id, movie_title, movie_genres [n, g] ("" padded),
                 movie_release_year (0 = unknown))  -> {"predictions"}   (serving)

and `assets.extra/ranking_core/`: the dense-input RankingCore alone, which the Pusher
converts to TensorFlow Lite (ranking_core.json names its inputs); and, unless turned off
(`sequence_scorer`), `assets.extra/sequence_scorer/`: the second stage that orders
retrieval's candidates (modules/sequence_scorer.py), trained here on the same training
ratings with its own hold-out (modules/sequence_trainer.py).
"""

import dataclasses
import json
import os
import time

from absl import logging
import tensorflow as tf
import tensorflow_transform as tft

from modules import features as F
from modules import ranking_model
from modules import saved_weights
from modules import sequence_scorer
from modules import sequence_trainer
from modules import training_progress
from modules import transformed_data
from modules import warm_start
from modules.hparams import RankingHParams, overrides_from

HPARAMS_KEY = "ranking"
TRAINING_FILE = "training.json"
PREDICTIONS = F.RATING_OUTPUT
SECONDS = F.transformed_name(F.TIMESTAMP_SECONDS)  # unix seconds, as Transform passes them


def _cores(model) -> dict:
  """Each ensemble member's core by name: what warm start saves and restores."""
  core = model.core
  members = core.members if isinstance(core, ranking_model.RankingEnsemble) else [core]
  return {f"member_{i}": member for i, member in enumerate(members)}


def train(train_files, eval_files, tft_output, hparams: RankingHParams, log_dir=None,
          base_model: str = None):
  """Trains the ensemble's members together, one pass over the data for all of them
  (ranking_model.jointly), each from the same member of `base_model` (the serving dir of
  an earlier run) when given; returns (model, summary dict)."""
  spec = tft_output.transformed_feature_spec()
  sizes = transformed_data.categorical_sizes(tft_output)
  names = ranking_model.core_input_names(list(spec))
  # Only what the model reads is held in memory (not e.g. the title tokens), read once.
  read_spec = {name: spec[name]
               for name in ranking_model.transformed_inputs(names) + [F.LABEL]}
  train_columns = transformed_data.load_columns(train_files, read_spec)
  ids = [n for n in names if n in ranking_model.EMBEDDED]
  dense = transformed_data.as_numpy({n: train_columns[n] for n in [F.LABEL] + ids})
  labels = dense[F.LABEL]
  row_counts = ranking_model.row_counts(dense, sizes, ids)
  train_ds = transformed_data.batches(train_columns, hparams.batch_size, shuffle=True,
                                      seed=hparams.seed, label_key=F.LABEL)
  eval_ds = transformed_data.dataset(eval_files, read_spec, 4096, label_key=F.LABEL)
  sample = transformed_data.sample_batch(train_files, spec)
  started = time.monotonic()
  members, warm = [], []
  for i in range(hparams.ensemble_size):  # independent members, different seeds
    member = ranking_model.build(sizes, list(spec), dataclasses.replace(
        hparams, seed=hparams.seed + i), float(labels.mean()), row_counts)
    member(sample)  # creates its variables now, under its own seed
    if base_model:
      warm.append(warm_start.restore(base_model, {f"member_{i}": member.core}, tft_output))
    members.append(member)
  joint = ranking_model.jointly(members, hparams)
  callbacks = [training_progress.epoch_callback("RankingTrainer", hparams.epochs, len(labels))]
  if log_dir:
    callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=log_dir))
  history = joint.fit(train_ds, validation_data=eval_ds, epochs=hparams.epochs,
                      callbacks=callbacks, verbose=0).history
  model = ranking_model.ensemble(members, hparams)
  eval_rmse = float(model.evaluate(eval_ds, verbose=0, return_dict=True)["rmse"])
  seconds = time.monotonic() - started
  summary = {
      "train_examples": int(len(labels)), "epochs": hparams.epochs,
      "train_seconds": round(seconds, 2),
      # Ratings a second through the whole ensemble (each rating trains every member).
      "examples_per_second": round(len(labels) * hparams.epochs / seconds, 1),
      "train_rmse": float(history["rmse"][-1]),
      "eval_rmse": eval_rmse,  # of the whole ensemble
      "member_eval_rmse_by_epoch": [[float(v) for v in history[f"val_rmse_{i}"]]
                                    for i in range(len(members))],
      "hparams": hparams.to_dict(),
      "warm_start": {"base_model": base_model, "members": warm} if base_model else None,
  }
  return model, summary


def _raw_serving_inputs(raw_spec):
  """1-D tensors per raw feature (genres: [n, g] padded with "")."""
  inputs = {}
  for name in ranking_model.RAW_FEATURES:
    if name not in raw_spec:
      continue
    shape = [None, None] if name == F.MOVIE_GENRES else [None]
    inputs[name] = tf.TensorSpec(shape, raw_spec[name].dtype, name=name)
  return inputs


def export(model, tft_output, serving_dir: str, summary: dict) -> None:
  raw_spec = tft_output.raw_feature_spec()
  saved = saved_weights.KerasWeights(model)
  saved.tft_layer = tft_output.transform_features_layer()  # saved: tables, vocabularies
  input_spec = {k: v for k, v in raw_spec.items() if k != F.LABEL}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def serve_examples(examples):
    transformed = saved.tft_layer(tf.io.parse_example(examples, input_spec))
    return {PREDICTIONS: model(transformed)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def transform_features(examples):
    return saved.tft_layer(tf.io.parse_example(examples, raw_spec))

  @tf.function
  def serve_features(**features):
    raw = {}
    for name, value in features.items():
      if name == F.MOVIE_GENRES:
        raw[name] = tf.sparse.from_dense(value)  # drops the "" padding
      elif name == F.MOVIE_RELEASE_YEAR:
        raw[name] = tf.sparse.from_dense(tf.reshape(value, [-1, 1]))  # drops 0 = unknown
      else:
        raw[name] = tf.reshape(value, [-1, 1])
    return {PREDICTIONS: model(saved.tft_layer(raw))}

  signatures = {
      "serving_default": serve_examples,
      "transform_features": transform_features,
      "serve_features": serve_features.get_concrete_function(**_raw_serving_inputs(raw_spec)),
  }
  tf.saved_model.save(saved, serving_dir, signatures=signatures)
  export_core(model.core, os.path.join(serving_dir, ranking_model.CORE_DIR), model.num_genres)
  warm_start.save(serving_dir, _cores(model), tft_output)
  with tf.io.gfile.GFile(os.path.join(serving_dir, TRAINING_FILE), "w") as f:
    json.dump(summary, f, indent=2)


def export_core(core, path: str, num_genres: int) -> None:
  """The dense-input core alone (for TensorFlow Lite), with its input names."""
  specs = {}
  for name in core.names:
    if name == ranking_model.GENRES_MULTI_HOT:
      specs[name] = tf.TensorSpec([None, num_genres], tf.float32, name=name)
    elif name in ranking_model.NUMERIC:
      specs[name] = tf.TensorSpec([None], tf.float32, name=name)
    else:
      specs[name] = tf.TensorSpec([None], tf.int64, name=name)

  @tf.function
  def score(**inputs):
    return {PREDICTIONS: core(inputs)}

  tf.saved_model.save(saved_weights.KerasWeights(core), path,
                      signatures={"serving_default": score.get_concrete_function(**specs)})
  with tf.io.gfile.GFile(os.path.join(path, ranking_model.CORE_INFO_FILE), "w") as f:
    json.dump({"inputs": sorted(specs), "num_genres": num_genres}, f)


def train_sequence_scorer(train_files, tft_output, hparams: RankingHParams):
  """(scorer, summary), or (None, why not) when it is turned off or the catalogue is
  wider than its full softmax is allowed to be."""
  if not hparams.sequence_scorer:
    return None, {"skipped": "turned off (sequence_scorer=false)"}
  sizes = transformed_data.categorical_sizes(tft_output)
  num_movies = sizes[ranking_model.MOVIE_ID]
  if num_movies > hparams.sequence_max_catalogue:
    why = (f"{num_movies:,} movies is more than sequence_max_catalogue "
           f"({hparams.sequence_max_catalogue:,}) for a full softmax; serving orders by "
           "retrieval score")
    logging.warning("RankingTrainer: no sequence scorer: %s", why)
    return None, {"skipped": why}
  spec = tft_output.transformed_feature_spec()
  names = (ranking_model.USER_ID, ranking_model.MOVIE_ID, SECONDS)
  ids = transformed_data.columns(train_files, spec, names)
  return sequence_trainer.train(*(ids[name] for name in names), num_movies, hparams)


def run_fn(fn_args):
  """TFX Trainer entry point."""
  hparams = RankingHParams.from_dict(overrides_from(fn_args.custom_config, HPARAMS_KEY))
  tft_output = tft.TFTransformOutput(fn_args.transform_output)
  model, summary = train(fn_args.train_files, fn_args.eval_files, tft_output, hparams,
                         log_dir=fn_args.model_run_dir, base_model=fn_args.base_model)
  scorer, summary["sequence_scorer"] = train_sequence_scorer(fn_args.train_files, tft_output,
                                                             hparams)
  export(model, tft_output, fn_args.serving_model_dir, summary)
  if scorer is not None:
    sequence_scorer.export(
        scorer, tft_output.vocabulary_file_by_name(F.VOCABULARY_NAMES[F.MOVIE_ID]),
        os.path.join(fn_args.serving_model_dir, sequence_scorer.EXPORT_DIR),
        summary["sequence_scorer"])
