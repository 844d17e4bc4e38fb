"""Two-tower model: shapes, history, log-q correction, and learning on tiny data."""
import numpy as np
import pytest
import tensorflow as tf

from modules import features as F
from modules import retrieval_model as rm
from modules import user_history
from modules.hparams import RetrievalHParams

_xf = F.transformed_name
N_USERS, N_MOVIES = 8, 12
SIZES = {_xf(F.USER_ID): N_USERS, _xf(F.MOVIE_ID): N_MOVIES, _xf(F.MOVIE_GENRES): 4,
         _xf(F.MOVIE_TITLE_TOKENS): 10, _xf(F.TIMESTAMP_BUCKET): 3}
AVAILABLE = list(SIZES) + [_xf(F.TIMESTAMP), _xf(F.MOVIE_RELEASE_YEAR), rm.QUERY_SECONDS_FEATURE]
DAY = int(F.SECONDS_PER_DAY)


def batch(users, movies, seconds=None):
  n = len(users)
  seconds = np.arange(n) if seconds is None else seconds
  col = lambda v, dtype=tf.int64: tf.constant(np.reshape(v, [-1, 1]), dtype)
  return {
      _xf(F.USER_ID): col(users), _xf(F.MOVIE_ID): col(movies),
      _xf(F.TIMESTAMP): col(np.zeros(n), tf.float32), _xf(F.TIMESTAMP_BUCKET): col(np.zeros(n)),
      rm.QUERY_SECONDS_FEATURE: col(seconds),
      _xf(F.MOVIE_RELEASE_YEAR): col(np.zeros(n), tf.float32),
      _xf(F.MOVIE_GENRES): tf.sparse.from_dense(col(np.array(movies) % 4)),
      _xf(F.MOVIE_TITLE_TOKENS): tf.sparse.from_dense(tf.constant(
          [[m % 10, (m + 1) % 10] for m in movies], tf.int64)),
  }


def tiny_data(seed=0):
  """Users 0-3 like movies 0-5, users 4-7 like movies 6-11."""
  rng = np.random.default_rng(seed)
  users = rng.integers(N_USERS, size=400)
  movies = np.where(users < 4, rng.integers(0, 6, size=400), rng.integers(6, 12, size=400))
  return users, movies


def history_for(users, movies):
  """The table of ratings made at seconds 0, 1, 2, ... in the given order."""
  return user_history.HistoryTable(*user_history.build_table(
      users, movies, np.arange(len(users)), N_USERS))


def test_towers_end_in_the_same_normalised_dimension():
  hp = RetrievalHParams(output_dim=16, hidden_layers=(32,), use_history=False)
  users, movies = tiny_data()
  model = rm.build(SIZES, AVAILABLE, hp, rm.movie_probabilities(movies, N_MOVIES))
  features = batch(users[:5], movies[:5])
  q, c = model.query_tower(features), model.candidate_tower(features)
  assert q.shape == c.shape == (5, 16)
  np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, rtol=1e-5)


def test_history_holds_only_ratings_strictly_before_the_example():
  # User 1 rated movies 10, 11, 12 at seconds 3, 1, 3 (a tie); user 0 rated 5 at second 9.
  table = user_history.HistoryTable(*user_history.build_table(
      np.array([1, 1, 1, 0]), np.array([10, 11, 12, 5]), np.array([3, 1, 3, 9]), num_users=2))
  ids, seconds = table.lookup(tf.constant([[1], [1], [1], [1], [0], [7]]),
                              tf.constant([[4], [3], [2], [1], [10], [10]]), limit=200)
  assert ids.to_list() == [[10, 12, 11], [11], [11], [], [5], []]  # newest first, ties by id
  assert seconds.to_list() == [[3, 3, 1], [1], [1], [], [9], []]
  # The same-second ratings are not history of each other; the limit keeps the newest.
  ids, _ = table.lookup(tf.constant([1, 1]), tf.constant([4, 3]), limit=1)
  assert ids.to_list() == [[10], [11]]


def test_the_examples_own_rating_is_not_in_its_history():
  hp = RetrievalHParams(output_dim=8)
  users, movies = np.array([0, 0]), np.array([3, 4])  # rated at seconds 0 and 1
  model = rm.build(SIZES, AVAILABLE, hp, rm.movie_probabilities(movies, N_MOVIES),
                   history_for(users, movies))
  first = model.with_history(batch(users[:1], movies[:1], seconds=np.array([0])))
  second = model.with_history(batch(users[1:], movies[1:], seconds=np.array([1])))
  assert first[rm.HISTORY_FEATURE].to_list() == [[]]  # nothing before the first rating
  assert second[rm.HISTORY_FEATURE].to_list() == [[3]]  # the first, not itself


def test_sequence_encoder_reads_order_and_ignores_padding():
  hp = RetrievalHParams(output_dim=8, history_time_scales=(), dropout=0.0, sequence_length=5)
  users, movies = np.array([0]), np.array([3])
  model = rm.build(SIZES, AVAILABLE, hp, rm.movie_probabilities(movies, N_MOVIES),
                   history_for(users, movies))
  def query(history, seconds):
    return model.query_tower({**batch(users, movies, seconds=np.array([100 * DAY])),
                              rm.HISTORY_FEATURE: tf.ragged.constant([history], tf.int64),
                              rm.HISTORY_SECONDS_FEATURE: tf.ragged.constant([seconds],
                                                                             tf.int64)}).numpy()
  newest_3 = query([3, 7], [99 * DAY, 10 * DAY])
  newest_7 = query([7, 3], [99 * DAY, 10 * DAY])
  assert not np.allclose(newest_3, newest_7)  # same movies, other order: another query
  assert not np.allclose(query([3], [99 * DAY]), query([3], [10 * DAY]))  # the gap counts
  encoder = model.query_tower.sequence
  out = encoder(tf.ragged.constant([[], [3]], tf.int64), tf.ragged.constant([[], [0]], tf.int64),
                tf.constant([[1], [1]], tf.int64))
  np.testing.assert_allclose(out.numpy()[0], 0.0)  # an empty history encodes to zeros
  assert np.abs(out.numpy()[1]).sum() > 0


def test_time_pool_weights_the_movie_rated_nearest_the_query():
  hp = RetrievalHParams(output_dim=8, history_time_scales=(0.05,), sequence_length=0)
  users, movies = np.array([0]), np.array([3])
  model = rm.build(SIZES, AVAILABLE, hp, rm.movie_probabilities(movies, N_MOVIES),
                   history_for(users, movies))
  tower = model.query_tower
  features = {rm.HISTORY_FEATURE: tf.ragged.constant([[3, 7]], tf.int64),
              rm.HISTORY_SECONDS_FEATURE: tf.ragged.constant([[10 * DAY, 90 * DAY]], tf.int64)}
  tower({**batch(users, movies), **features})  # create the weights
  embedding = tower.history_embedding.embeddings.numpy()
  def pools(query_day):
    out = tower._history({**features, rm.QUERY_SECONDS_FEATURE: tf.constant(
        [[int(query_day * DAY)]], tf.int64)})
    return np.split(out.numpy()[0], 2)  # the plain mean, the time pool

  for query_day, nearest in [(10.0, 3), (90.0, 7)]:  # rated at the query's time: w = 1
    mean, by_time = pools(query_day)
    np.testing.assert_allclose(mean, embedding[[3, 7]].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(by_time, embedding[nearest] / 2, atol=1e-6)  # Σwe / (1 + Σw)
  _, stale = pools(50.0)  # 40 days from either rating: the pool fades out
  np.testing.assert_allclose(stale, 0.0, atol=1e-6)


def test_logq_correction_changes_the_loss():
  users, movies = tiny_data()
  features = batch(users[:64], movies[:64])
  probs = rm.movie_probabilities(movies, N_MOVIES)
  with_q = rm.build(SIZES, AVAILABLE, RetrievalHParams(use_history=False), probs)
  without = rm.build(SIZES, AVAILABLE, RetrievalHParams(use_history=False,
                                                        logq_correction=False), probs)
  with_q.compute_loss(features), without.compute_loss(features)  # create the weights
  without.set_weights(with_q.get_weights())
  assert float(with_q.compute_loss(features)) != pytest.approx(float(without.compute_loss(features)))


def test_training_on_tiny_data_learns_the_structure():
  hp = RetrievalHParams(output_dim=8, id_embedding_dim=8, learning_rate=0.05, batch_size=64)
  users, movies = tiny_data()
  history = history_for(users, movies)
  model = rm.build(SIZES, AVAILABLE, hp, rm.movie_probabilities(movies, N_MOVIES), history)
  ds = tf.data.Dataset.from_tensor_slices(batch(users, movies)).batch(64)
  before = float(model.evaluate(ds, verbose=0, return_dict=True)["loss"])
  model.fit(ds, epochs=15, verbose=0)
  assert float(model.evaluate(ds, verbose=0, return_dict=True)["loss"]) < 0.8 * before
  all_movies = batch(np.zeros(N_MOVIES, int), np.arange(N_MOVIES))
  candidates = model.candidate_tower(all_movies).numpy()
  for user, liked in [(0, set(range(6))), (7, set(range(6, 12)))]:
    query = model.with_history(batch([user], [0], seconds=np.array([len(users)])))
    top = np.argsort(-(model.query_tower(query).numpy() @ candidates.T)[0])[:6]
    assert len(set(top) & liked) >= 5, (user, top)  # chance level would be 3


def test_unknown_hparams_are_rejected():
  with pytest.raises(ValueError, match="unknown RetrievalHParams keys"):
    RetrievalHParams.from_dict({"epoch": 3})
