"""Hyperparameters of both models: one dataclass each, defaults here, nowhere else.

The pipeline passes them to the Trainers as `custom_config` dicts (so they are recorded
in MLMD with each execution and key TFX's cache); `from_dict` rejects unknown keys so a
typo in a configuration fails loudly instead of silently training the default.
"""

import dataclasses
from typing import Any, Dict, Optional, Tuple

from modules.errors import ConfigError


class _FromDict:
  """`from_dict` / `to_dict` for a dataclass of plain values."""

  @classmethod
  def from_dict(cls, values: Dict[str, Any] = None):
    values = dict(values or {})
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
      raise ConfigError(f"unknown {cls.__name__} keys {unknown}; known: {sorted(known)}")
    for name, value in values.items():
      if isinstance(value, list):  # JSON round trip turns tuples into lists
        values[name] = tuple(value)
    return cls(**values)

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


# custom_config key of the modules/ source digest (keys TFX's cache on code changes).
FINGERPRINT_KEY = "modules_sha256"


def overrides_from(custom_config: Optional[Dict[str, Any]], key: str) -> Dict[str, Any]:
  """A Trainer's hyperparameter overrides from its custom_config: `custom_config[key]`
  (local runs, with the code fingerprint beside it), or, when compiled for Kubeflow with
  the `<key>_hparams` runtime parameter, the whole custom_config (the overrides)."""
  config = dict(custom_config or {})
  if key in config:
    return config[key]
  config.pop(FINGERPRINT_KEY, None)
  return config


@dataclasses.dataclass(frozen=True)
class RetrievalHParams(_FromDict):
  """The two-tower retrieval model and its training.

  Defaults were chosen by ablation with bench/retrieval_quality.py on ml-100k, split
  "last" (next-item, causal histories; see BENCHMARKS.md), checked against the random
  split; none is a constant fitted to one dataset's value: the time scales are an hour (a
  rating session), a day and a month, and history_max / sequence_length bound cost, not fit.
  HR@10 / NDCG@10 (two seeds where noted): pools + user id 0.223 / 0.123; + sequence encoder
  0.224 / 0.120 at 1.8x the training time (so it is off by default, see sequence_length);
  without the time pools 0.203 / 0.112; without the user id 0.202 / 0.107. Earlier, on the
  random split: without log-q correction top-10 collapses (0.04 vs 0.16); dropout 0.3 and
  the tied history embedding let 10 epochs help instead of overfit; catalogue negatives
  measured no gain.
  """
  id_embedding_dim: int = 64  # user id and movie id embeddings
  feature_embedding_dim: int = 16  # small categorical features (genres, occupation, ...)
  use_user_id: bool = True  # a per-user embedding (memorises; history generalises)
  use_history: bool = True  # mean embedding of the user's rated movies in the query tower
  history_max: int = 200  # most recent earlier movies the pools read per example
  # The newest `sequence_length` earlier movies read as a sequence by self-attention
  # (modules/retrieval_model.SequenceEncoder), e.g. 50; 0 turns the encoder off. Off by
  # default: on ml-100k it measured no gain over the time pools (which already see the
  # last session) for 1.8x the training time. Worth measuring again on releases with
  # longer histories (ml-1m and up).
  sequence_length: int = 0
  sequence_layers: int = 1
  sequence_heads: int = 2
  tie_history_embedding: bool = True  # history uses the candidate tower's movie embedding
  # Initial time scales (days, then learned) of the history pools weighted by closeness in
  # time to the query; () keeps only the plain mean.
  history_time_scales: Tuple[float, ...] = (0.05, 1.0, 30.0)
  hidden_layers: Tuple[int, ...] = ()  # dense layers of each tower before the output
  output_dim: int = 64  # both towers end in this dimension
  l2: float = 0.0  # L2 penalty on every embedding table and dense kernel
  dropout: float = 0.3  # on each tower's concatenated inputs, in training
  # Probability that a demographic feature (gender, occupation, zip prefix) is replaced by
  # "unknown" in training: a cold-start request may leave any of them out.
  demographic_dropout: float = 0.1
  normalize: bool = True  # L2-normalise tower outputs (cosine similarity / temperature)
  temperature: float = 0.05  # logits are divided by it
  logq_correction: bool = True  # subtract log of the movie's sampling probability
  remove_accidental_hits: bool = True  # in-batch "negatives" that are the positive movie
  catalogue_negatives: int = 0  # movies drawn uniformly per batch as extra negatives (0: off)
  # Training reads each user's ratings as windows of this many consecutive ratings, all
  # positions in one pass over a shared context (modules/rating_windows.py); 0 gathers a
  # history per rating instead (also what the sequence encoder needs).
  window_length: int = 16
  epochs: int = 10
  batch_size: int = 1024  # ratings per batch (about; window batches hold whole windows)
  # lazy_adam (modules/lazy_adam.py) | adam | adagrad | sgd. Lazy: a step updates only the
  # embedding rows its batch looked up, so its cost follows the batch, not the number of
  # users (1M synthetic ratings: 47.2k ratings/s against 29.8k for tf_keras' Adam); on
  # ml-100k the same quality over two seeds (HR@10 0.209 / NDCG@10 0.1136 vs 0.214 / 0.1140).
  optimizer: str = "lazy_adam"
  learning_rate: float = 0.005
  seed: int = 42
  # Each user's newest training ratings (at most this many, at most half of theirs) not
  # trained on, so that a second stage can learn to re-order this model's candidates for
  # them out of sample, as they are at serving time (modules/ranking_holdout.py,
  # bench/ranking_quality.py). 0 (the default): none; no second stage has earned a place
  # in the served ordering yet (BENCHMARKS.md, "Ranking").
  holdout_per_user: int = 0


def make_optimizer(name: str, learning_rate: float):
  """A legacy-Keras (tf_keras) optimizer by name; lazy_adam: modules/lazy_adam.py."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from modules import lazy_adam  # pylint: disable=g-import-not-at-top
  optimizers = {"adam": tf.keras.optimizers.Adam, "lazy_adam": lazy_adam.LazyAdam,
                "adagrad": tf.keras.optimizers.Adagrad, "sgd": tf.keras.optimizers.SGD}
  if name not in optimizers:
    raise ConfigError(f"optimizer {name!r} is not one of {sorted(optimizers)}")
  return optimizers[name](learning_rate=learning_rate)


@dataclasses.dataclass(frozen=True)
class RankingHParams(_FromDict):
  """The rating-prediction (ranking) model: DCN-v2 cross layers beside a deep network,
  plus user and movie biases. Defaults chosen on ml-100k (random 80/20, seed 42): one
  network reaches eval RMSE 0.905-0.906 after 9 epochs (it rises after); the mean of three
  0.898. One network is the default: the served order is retrieval's (BENCHMARKS.md,
  "Ranking"), so the rating is for display, and 0.007 RMSE there is not worth three
  times the Trainer's time."""
  id_embedding_dim: int = 32
  feature_embedding_dim: int = 8
  cross_layers: int = 2
  cross_projection_dim: int = 0  # low-rank cross layers when > 0
  deep_layers: Tuple[int, ...] = (256, 128)
  dropout: float = 0.3
  l2: float = 5e-4  # on the dense kernels (cross, deep and output layers)
  # L2 on the embedding tables (ids, features, biases), applied per looked-up row with
  # weight n / count(row): the whole-table penalty in expectation, at a cost that follows
  # the batch, not the number of users (modules/ranking_model.RankingCore._row_penalty).
  embedding_l2: float = 5e-4
  ensemble_size: int = 1  # networks, seeds differ, each on its own loss (trained in one pass), averaged
  epochs: int = 9
  batch_size: int = 1024
  # lazy_adam: with the per-row penalty a step's gradient touches only its batch's rows.
  # ml-100k random split, eval RMSE: 0.9060 (adam 0.9043; the whole-table penalty with
  # adam, before, 0.9048), bench/trainer_throughput.py --trainer ranking.
  optimizer: str = "lazy_adam"
  learning_rate: float = 0.002
  seed: int = 42
  # The sequence scorer (modules/sequence_scorer.py) trained beside the rating model: the
  # second stage that orders retrieval's candidates at serving. Its hyperparameters are
  # SASRec's usual ones for MovieLens (Kang & McAuley 2018), not tuned here; its epoch is
  # chosen on each user's newest training rating, held out of its training, and training
  # stops `sequence_patience` epochs after the best one. Blended with the retrieval score
  # it measured 1.087-1.096x retrieval order's HR@10 and 1.110-1.115x its NDCG@10 on
  # ml-100k's time cut (BENCHMARKS.md, "A sequence scorer from the next-item literature").
  sequence_scorer: bool = True
  sequence_length: int = 50  # newest earlier movies read
  sequence_dim: int = 64
  sequence_blocks: int = 2
  sequence_heads: int = 2
  sequence_dropout: float = 0.2
  sequence_learning_rate: float = 1e-3
  sequence_batch_size: int = 256
  sequence_max_epochs: int = 40
  sequence_patience: int = 4
  # Cost bounds. Each rating is one query through the encoder, and a softmax over the
  # whole catalogue costs batch x catalogue per step: on 2 cores an ml-100k epoch
  # (96k queries, 1,683 movies) takes about a minute. An epoch trains on at most this
  # many queries, drawn at random (ml-100k: all of them; ml-1m: about a tenth). Patience
  # counts epochs, so shorter epochs stop sooner after the best: at 1M ratings 100,000
  # reached the best validation at the same 800,000 queries as 200,000 did, in 722 s
  # instead of 968 s (BENCHMARKS.md, "The second stage at 1M ratings")...
  sequence_max_queries_per_epoch: int = 100_000
  # ... validation scores at most this many users' newest ratings over the whole
  # catalogue (ml-100k: all 943; 10,000 rows put a standard error of about 0.003 on
  # NDCG@10, enough to pick an epoch) ...
  sequence_max_validation_queries: int = 10_000
  # ... and above this many movies the scorer is not trained (the Trainer logs why;
  # serving then orders by retrieval score and says so). Training every position of a
  # user's window in one pass (causal attention, as SASRec does) and a sampled softmax
  # would lift both.
  sequence_max_catalogue: int = 20_000
