"""TFX Trainer `run_fn` of the two-tower retrieval model.

Referenced by import path (`modules.retrieval_trainer.run_fn`). Hyperparameters come from
the Trainer's `custom_config["retrieval"]` (see modules/hparams.py); TensorBoard logs go
to the Trainer's model run directory; both towers are exported under the serving model
directory (modules/retrieval_export.py).
"""

import json
import os
import time

from absl import logging
import tensorflow as tf
import tensorflow_transform as tft

from modules import movie_table
from modules import ranking_holdout
from modules import rating_windows
from modules import retrieval_export
from modules import retrieval_model
from modules import training_progress
from modules import transformed_data
from modules import user_history
from modules import warm_start
from modules.hparams import RetrievalHParams, overrides_from

HPARAMS_KEY = "retrieval"
ID_COLUMNS = (retrieval_model.QUERY_ID_FEATURE, retrieval_model.CANDIDATE_ID_FEATURE,
              retrieval_model.QUERY_SECONDS_FEATURE)
TRAINING_FILE = "training.json"
WINDOWS, EXAMPLES = "user windows", "examples"  # how training batches are fed  # wall time, examples/s, losses; next to the SavedModels


def _towers(model) -> dict:
  """What warm start saves and restores (modules/warm_start.py)."""
  return {"query": model.query_tower, "candidate": model.candidate_tower}


def history_table(ids, sizes) -> user_history.HistoryTable:
  """Every training rating by user (`ids`: the ID_COLUMNS of the train split)."""
  return user_history.HistoryTable(*user_history.build_table(
      ids[retrieval_model.QUERY_ID_FEATURE], ids[retrieval_model.CANDIDATE_ID_FEATURE],
      ids[retrieval_model.QUERY_SECONDS_FEATURE], sizes[retrieval_model.QUERY_ID_FEATURE]))


def feeding_route(hparams: RetrievalHParams, row_filter: bool = False) -> str:
  """WINDOWS (each user's ratings in windows, modules/rating_windows.py) unless turned
  off, the sequence encoder is on (it reads a gathered history per rating) or a caller's
  row filter picks the training ratings (windows train every rating after a cutoff)."""
  if not (hparams.window_length and hparams.use_history):
    return EXAMPLES
  if hparams.sequence_length or hparams.catalogue_negatives or row_filter:
    logging.info("RetrievalTrainer: training from examples, not user windows (the "
                 "sequence encoder, catalogue negatives and a row filter need a batch "
                 "of examples)")
    return EXAMPLES
  return WINDOWS


def window_batches(train_files, spec, hparams: RetrievalHParams, movies,
                   cutoffs) -> rating_windows.WindowBatches:
  windows = rating_windows.load(
      train_files, spec, retrieval_model.QUERY_ID_FEATURE,
      retrieval_model.CANDIDATE_ID_FEATURE, retrieval_model.QUERY_SECONDS_FEATURE,
      hparams.history_max, hparams.window_length,
      cutoffs if hparams.holdout_per_user else None)
  return rating_windows.WindowBatches(windows, movies, retrieval_model.CANDIDATE_ID_FEATURE,
                                      retrieval_model.QUERY_SECONDS_FEATURE)


def train(train_files, eval_files, tft_output, hparams: RetrievalHParams, log_dir=None,
          base_model: str = None, keep=None):
  """Trains the two towers, from `base_model`'s weights when given (the serving dir of
  an earlier run); returns (model, training summary dict).

  Every example (train and eval) is a next-item query: its history is the user's
  training ratings made strictly before it (modules/user_history.py). `keep` (benchmarks,
  e.g. cross-fitting in bench/second_stage_study.py): a function of ID_COLUMNS tensors,
  elementwise, True for the training ratings trained on; the others stay in the users'
  histories, as holdout_per_user's do."""
  spec = tft_output.transformed_feature_spec()
  sizes = transformed_data.categorical_sizes(tft_output)
  ids = transformed_data.columns(train_files, spec, ID_COLUMNS)
  movie_ids = ids[retrieval_model.CANDIDATE_ID_FEATURE]
  probabilities = retrieval_model.movie_probabilities(
      movie_ids, sizes[retrieval_model.CANDIDATE_ID_FEATURE])
  history = history_table(ids, sizes) if hparams.use_history else None
  feeding = feeding_route(hparams, row_filter=keep is not None)
  movies = None
  if hparams.catalogue_negatives or feeding == WINDOWS:
    movies = movie_table.MovieTable(movie_table.collect(
        train_files, spec, retrieval_model.CANDIDATE_ID_FEATURE,
        retrieval_model.CANDIDATE_BAGS + retrieval_model.CANDIDATE_NUMERIC),
        retrieval_model.CANDIDATE_ID_FEATURE)
  model = retrieval_model.build(sizes, list(spec), hparams, probabilities, history, movies)
  # With holdout_per_user, each user's newest ratings are left to a second stage (it
  # learns from this model's candidates for them, which must not have been trained on).
  cutoffs = ranking_holdout.holdout_cutoffs(
      ids[retrieval_model.QUERY_ID_FEATURE], ids[retrieval_model.QUERY_SECONDS_FEATURE],
      hparams.holdout_per_user, sizes[retrieval_model.QUERY_ID_FEATURE])
  trainable = (ids[retrieval_model.QUERY_SECONDS_FEATURE] <
               cutoffs[ids[retrieval_model.QUERY_ID_FEATURE]])
  filters = []
  if hparams.holdout_per_user:
    filters.append(transformed_data.before_cutoffs(
        cutoffs, retrieval_model.QUERY_ID_FEATURE, retrieval_model.QUERY_SECONDS_FEATURE))
  if keep is not None:
    filters.append(lambda example: tf.reshape(keep(example), []))
    trainable &= keep({name: tf.constant(ids[name]) for name in ID_COLUMNS}).numpy()
  example_filter = ((lambda example: tf.reduce_all([f(example) for f in filters]))
                    if filters else None)
  trained_on = int(trainable.sum())
  if feeding == WINDOWS:
    train_ds = window_batches(train_files, spec, hparams, movies, cutoffs).dataset(
        hparams.batch_size, hparams.seed)
  else:
    train_ds = transformed_data.dataset(train_files, spec, hparams.batch_size, shuffle=True,
                                        seed=hparams.seed, keep=example_filter)
  eval_ds = transformed_data.dataset(eval_files, spec, hparams.batch_size)
  warm = None
  if base_model:
    model.compute_loss(transformed_data.sample_batch(train_files, spec))  # creates variables
    warm = warm_start.restore(base_model, _towers(model), tft_output)
    warm["base_model"] = base_model
  callbacks = [training_progress.epoch_callback("RetrievalTrainer", hparams.epochs, trained_on)]
  if log_dir:
    callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch"))
  started = time.monotonic()
  history = model.fit(train_ds, validation_data=eval_ds, epochs=hparams.epochs,
                      callbacks=callbacks, verbose=0)
  seconds = time.monotonic() - started
  summary = {
      "train_examples": trained_on,
      "feeding": feeding,
      "held_out_for_ranking": int(len(movie_ids)) - trained_on,
      "epochs": hparams.epochs,
      "train_seconds": round(seconds, 2),
      "examples_per_second": round(trained_on * hparams.epochs / seconds, 1),
      "final_loss": float(history.history["loss"][-1]),
      "final_eval_loss": float(history.history["val_loss"][-1]),
      "hparams": hparams.to_dict(),
      "warm_start": warm,
  }
  return model, summary


def export(model, tft_output, serving_dir: str, summary: dict) -> None:
  retrieval_export.export_query_model(
      model.query_tower, tft_output, retrieval_model.QUERY_RAW_FEATURES,
      os.path.join(serving_dir, retrieval_export.QUERY_DIR), history=model.history_table,
      history_max=summary["hparams"]["history_max"])
  retrieval_export.export_candidate_model(
      model.candidate_tower, tft_output,
      os.path.join(serving_dir, retrieval_export.CANDIDATE_DIR))
  warm_start.save(serving_dir, _towers(model), tft_output)
  with tf.io.gfile.GFile(os.path.join(serving_dir, TRAINING_FILE), "w") as f:
    json.dump(summary, f, indent=2)


def run_fn(fn_args):
  """TFX Trainer entry point."""
  hparams = RetrievalHParams.from_dict(overrides_from(fn_args.custom_config, HPARAMS_KEY))
  tft_output = tft.TFTransformOutput(fn_args.transform_output)
  model, summary = train(fn_args.train_files, fn_args.eval_files, tft_output, hparams,
                         log_dir=fn_args.model_run_dir, base_model=fn_args.base_model)
  export(model, tft_output, fn_args.serving_model_dir, summary)
