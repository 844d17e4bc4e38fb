"""Ranking model: inputs, learning on tiny data, and the TensorFlow Lite copy's scores."""
import numpy as np
import pytest
import tensorflow as tf

from components.bundle_pusher.executor import tflite_from_core
from modules import features as F
from modules import ranking_model as rkm
from modules import ranking_trainer
from modules.hparams import RankingHParams

_xf = F.transformed_name
N_USERS, N_MOVIES, N_GENRES = 10, 12, 4
SIZES = {_xf(F.USER_ID): N_USERS, _xf(F.MOVIE_ID): N_MOVIES, _xf(F.MOVIE_GENRES): N_GENRES,
         _xf(F.TIMESTAMP_BUCKET): 3}
AVAILABLE = list(SIZES) + [_xf(F.TIMESTAMP), _xf(F.MOVIE_RELEASE_YEAR)]


def transformed(users, movies):
  n = len(users)
  col = lambda v, dtype=tf.int64: tf.constant(np.reshape(v, [-1, 1]), dtype)
  return {
      _xf(F.USER_ID): col(users), _xf(F.MOVIE_ID): col(movies),
      _xf(F.TIMESTAMP): col(np.linspace(-1, 1, n), tf.float32),
      _xf(F.TIMESTAMP_BUCKET): col(np.arange(n) % 3),
      _xf(F.MOVIE_RELEASE_YEAR): col(np.zeros(n), tf.float32),
      _xf(F.MOVIE_GENRES): col(np.array(movies) % N_GENRES),  # one genre each, dense
  }


def tiny_ratings(seed=0):
  """Even users love even movies (5 stars) and dislike odd ones (1 star); vice versa."""
  rng = np.random.default_rng(seed)
  users, movies = rng.integers(N_USERS, size=600), rng.integers(N_MOVIES, size=600)
  ratings = np.where(users % 2 == movies % 2, 5.0, 1.0).astype(np.float32)
  return users, movies, ratings


def embedded_ids(users, movies):
  """The embedded inputs' ids of `transformed(users, movies)`."""
  return {_xf(F.USER_ID): users, _xf(F.MOVIE_ID): movies,
          _xf(F.TIMESTAMP_BUCKET): np.arange(len(users)) % 3}


def counts(users, movies):
  """Training examples per embedding row of `transformed(users, movies)`."""
  ids = embedded_ids(users, movies)
  return rkm.row_counts(ids, SIZES, list(ids))


def test_genres_become_a_multi_hot_vector():
  genres = tf.SparseTensor([[0, 0], [0, 1], [1, 0]], tf.constant([1, 3, 0], tf.int64), [2, 2])
  inputs = rkm.core_inputs({_xf(F.MOVIE_GENRES): genres}, [rkm.GENRES_MULTI_HOT], N_GENRES)
  np.testing.assert_array_equal(inputs[rkm.GENRES_MULTI_HOT].numpy(),
                                [[0, 1, 0, 1], [1, 0, 0, 0]])


def test_ranking_model_learns_the_crossing_on_tiny_data():
  users, movies, ratings = tiny_ratings()
  model = rkm.build(SIZES, AVAILABLE, RankingHParams(epochs=1, learning_rate=0.01, l2=0.0,
                                                     embedding_l2=0.0, dropout=0.0),
                    float(ratings.mean()))
  ds = tf.data.Dataset.from_tensor_slices((transformed(users, movies), ratings)).batch(64)
  before = model.evaluate(ds, verbose=0, return_dict=True)["rmse"]
  model.fit(ds, epochs=30, verbose=0)
  after = model.evaluate(ds, verbose=0, return_dict=True)["rmse"]
  assert before > 1.5 and after < 0.5
  preds = model(transformed([0, 0], [2, 3])).numpy().reshape(-1)
  assert preds[0] > 4 and preds[1] < 2  # user 0 likes movie 2, not movie 3


@pytest.mark.parametrize("members", [1, 2])
def test_tflite_scores_like_the_savedmodel(tmp_path, members):
  users, movies, ratings = tiny_ratings(1)
  ds = tf.data.Dataset.from_tensor_slices((transformed(users, movies), ratings)).batch(64)
  trained = []
  for seed in range(members):
    member = rkm.build(SIZES, AVAILABLE, RankingHParams(seed=seed), float(ratings.mean()),
                       counts(users, movies))
    member.fit(ds, epochs=3, verbose=0)
    trained.append(member)
  model = rkm.ensemble(trained, RankingHParams())
  core_dir = str(tmp_path / "core")
  ranking_trainer.export_core(model.core, core_dir, N_GENRES)

  inputs = rkm.core_inputs(transformed(users[:7], movies[:7]), model.core.names, N_GENRES)
  expected = tf.saved_model.load(core_dir).signatures["serving_default"](**inputs)[
      ranking_trainer.PREDICTIONS].numpy()
  interpreter = tf.lite.Interpreter(model_content=tflite_from_core(core_dir))
  runner = interpreter.get_signature_runner("serving_default")
  got = runner(**{k: v.numpy() for k, v in inputs.items()})[ranking_trainer.PREDICTIONS]
  np.testing.assert_allclose(got, expected, atol=1e-4)
  assert got.shape == (7, 1)


def test_unknown_ranking_hparams_are_rejected():
  with pytest.raises(ValueError, match="unknown RankingHParams keys"):
    RankingHParams.from_dict({"layers": 3})


def test_members_trained_jointly_get_the_updates_they_would_get_alone():
  """One pass over the data trains every member (ranking_model.jointly): after the same
  SGD steps, each member's weights equal those of the same member trained on its own."""
  users, movies, ratings = tiny_ratings(2)
  features = transformed(users[:128], movies[:128])
  ds = tf.data.Dataset.from_tensor_slices((features, ratings[:128])).batch(64)
  hparams = RankingHParams(optimizer="sgd", learning_rate=0.05, dropout=0.0, l2=1e-3)

  def member(seed):
    m = rkm.build(SIZES, AVAILABLE, RankingHParams(**{**hparams.to_dict(), "seed": seed}),
                  float(ratings.mean()), counts(users[:128], movies[:128]))
    m(features)  # variables now, under this seed
    return m

  together = [member(0), member(1)]
  rkm.jointly(together, hparams).fit(ds, epochs=2, verbose=0)
  for seed, joint_member in enumerate(together):
    alone = member(seed)
    alone.fit(ds, epochs=2, verbose=0)
    for a, b in zip(alone.trainable_weights, joint_member.trainable_weights):
      np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


def test_row_penalty_over_all_the_data_is_the_whole_table_l2_of_the_rows_it_trains():
  """With every training example in one batch, Σ n / count(row) · ‖row‖² averaged over
  the batch is exactly Σ ‖row‖² over the rows training sees (embeddings and biases)."""
  users, movies, ratings = tiny_ratings(3)
  users, movies = users[:50] % 7, movies[:50]  # users 7..9 and maybe some movies unseen
  l2 = 0.01
  model = rkm.build(SIZES, AVAILABLE, RankingHParams(l2=0.0, embedding_l2=l2),
                    float(ratings.mean()), counts(users, movies))
  features = transformed(users, movies)
  model(features)
  assert not model.losses  # serving adds no penalty
  model(features, training=True)
  assert len(model.losses) == 1
  core = model.core
  tables = {_xf(F.USER_ID): [core.embeddings[_xf(F.USER_ID)], core.user_bias],
            _xf(F.MOVIE_ID): [core.embeddings[_xf(F.MOVIE_ID)], core.movie_bias],
            _xf(F.TIMESTAMP_BUCKET): [core.embeddings[_xf(F.TIMESTAMP_BUCKET)]]}
  ids = embedded_ids(users, movies)
  expected = 0.0
  for name, layers in tables.items():
    seen = np.unique(ids[name])
    for layer in layers:
      expected += float(np.square(layer.embeddings.numpy()[seen]).sum())
  np.testing.assert_allclose(float(model.losses[0]), l2 * expected, rtol=1e-5)


def test_a_lazy_adam_step_leaves_the_users_outside_the_batch_alone():
  """The row penalty keeps the gradient sparse: a step on users 0 and 1 moves their rows
  and no other user's; the next step, on users 2 and 3, leaves 0 and 1 where they are
  (tf_keras' Adam would move them again with their moments, and a whole-table penalty
  would move every row)."""
  users, movies, ratings = tiny_ratings(4)
  model = rkm.build(SIZES, AVAILABLE, RankingHParams(optimizer="lazy_adam"),
                    float(ratings.mean()), counts(users, movies))
  model(transformed(users[:2], movies[:2]))
  table = model.core.embeddings[_xf(F.USER_ID)].embeddings
  moved = []
  for batch_users in ([0, 1], [2, 3]):
    batch = np.isin(users, batch_users)
    before = table.numpy()
    model.fit(tf.data.Dataset.from_tensor_slices(
        (transformed(users[batch], movies[batch]), ratings[batch])).batch(1000),
              epochs=1, verbose=0)
    moved.append(np.flatnonzero(np.abs(table.numpy() - before).sum(axis=1) > 0).tolist())
  assert moved == [[0, 1], [2, 3]]
