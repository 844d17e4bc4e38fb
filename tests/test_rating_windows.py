"""Window batches (modules/rating_windows.py) against the per-rating route they replace:
the same histories, the same pooled query inputs, the same loss when windows hold one
rating each."""
import numpy as np
import pytest
import tensorflow as tf

from modules import movie_table
from modules import rating_windows
from modules import retrieval_model as rm
from modules import user_history
from modules.hparams import RetrievalHParams

USERS, MOVIES = 6, 30


def ratings(seed=0):
  """Ratings with ties in time (several movies rated in one second) and users of very
  different lengths; columns as Transform writes them (ids, unix seconds)."""
  rng = np.random.default_rng(seed)
  per_user = [1, 3, 40, 75, 12, 9]
  users = np.repeat(np.arange(USERS), per_user)
  movies = np.concatenate([rng.choice(MOVIES, n, replace=False) if n <= MOVIES
                           else rng.integers(MOVIES, size=n) for n in per_user])
  seconds = rng.integers(0, 40, size=len(users)) * 3600 + 10**9  # many same-second ties
  shuffle = rng.permutation(len(users))
  return {rm.QUERY_ID_FEATURE: users[shuffle], rm.CANDIDATE_ID_FEATURE: movies[shuffle],
          rm.QUERY_SECONDS_FEATURE: seconds[shuffle]}


def arrange(columns, history_max, window_length, cutoffs=None):
  return rating_windows.arrange(columns, rm.QUERY_ID_FEATURE, rm.CANDIDATE_ID_FEATURE,
                                rm.QUERY_SECONDS_FEATURE, history_max, window_length, cutoffs)


def expected_history(columns, row, history_max):
  """By brute force: the user's ratings strictly before the row's second, newest first,
  ties by smaller movie id, the first history_max of them (as a set of (movie, second))."""
  u, t = columns[rm.QUERY_ID_FEATURE][row], columns[rm.QUERY_SECONDS_FEATURE][row]
  earlier = sorted(((-s, m) for us, m, s in zip(columns[rm.QUERY_ID_FEATURE],
                                                 columns[rm.CANDIDATE_ID_FEATURE],
                                                 columns[rm.QUERY_SECONDS_FEATURE])
                    if us == u and s < t))[:history_max]
  return sorted((m, -s) for s, m in earlier)


@pytest.mark.parametrize("history_max,window_length", [(200, 16), (5, 4), (3, 1)])
def test_windows_cover_every_rating_once_and_see_exactly_its_history(history_max,
                                                                      window_length):
  columns = ratings()
  w = arrange(columns, history_max, window_length)
  rows = np.concatenate([np.arange(s, e) for s, e in zip(w.starts, w.ends)])
  assert sorted(rows) == list(range(len(columns[rm.QUERY_ID_FEATURE])))
  assert (w.ends - w.starts).max() <= window_length
  sorted_movies, sorted_seconds = (w.columns[rm.CANDIDATE_ID_FEATURE],
                                   w.columns[rm.QUERY_SECONDS_FEATURE])
  for row in range(len(rows)):
    seen = sorted(zip(sorted_movies[w.history_start[row]:w.history_end[row]],
                      sorted_seconds[w.history_start[row]:w.history_end[row]]))
    assert seen == expected_history(w.columns, row, history_max), row


def test_held_out_ratings_are_never_positions():
  columns = ratings()
  cutoffs = np.full(USERS, np.iinfo(np.int64).max)
  cutoffs[3] = np.sort(columns[rm.QUERY_SECONDS_FEATURE][columns[rm.QUERY_ID_FEATURE] == 3])[50]
  w = arrange(columns, 200, 16, cutoffs)
  positions = np.concatenate([np.arange(s, e) for s, e in zip(w.starts, w.ends)])
  users = w.columns[rm.QUERY_ID_FEATURE][positions]
  seconds = w.columns[rm.QUERY_SECONDS_FEATURE][positions]
  assert (seconds < cutoffs[users]).all()
  assert len(positions) == (columns[rm.QUERY_SECONDS_FEATURE] <
                            cutoffs[columns[rm.QUERY_ID_FEATURE]]).sum()


def model_and_batches(columns, window_length, history_max=5):
  hparams = RetrievalHParams(id_embedding_dim=8, output_dim=8, dropout=0.0,
                             demographic_dropout=0.0, history_max=history_max,
                             window_length=window_length)
  sizes = {rm.QUERY_ID_FEATURE: USERS, rm.CANDIDATE_ID_FEATURE: MOVIES}
  available = list(columns)
  table = user_history.HistoryTable(*user_history.build_table(
      columns[rm.QUERY_ID_FEATURE], columns[rm.CANDIDATE_ID_FEATURE],
      columns[rm.QUERY_SECONDS_FEATURE], USERS))
  probabilities = rm.movie_probabilities(columns[rm.CANDIDATE_ID_FEATURE], MOVIES)
  model = rm.build(sizes, available, hparams, probabilities, table)
  movies = movie_table.MovieTable({rm.CANDIDATE_ID_FEATURE: list(range(MOVIES))},
                                  rm.CANDIDATE_ID_FEATURE)
  windows = arrange(columns, history_max, window_length)
  batches = rating_windows.WindowBatches(windows, movies, rm.CANDIDATE_ID_FEATURE,
                                         rm.QUERY_SECONDS_FEATURE)
  return model, windows, batches


def as_examples(batch):
  """The batch's ratings as the per-example route gets them (dense [n, 1] columns)."""
  return {k: batch[k] for k in (rm.QUERY_ID_FEATURE, rm.CANDIDATE_ID_FEATURE,
                                rm.QUERY_SECONDS_FEATURE)}


def test_pooled_history_equals_the_per_rating_lookup():
  columns = ratings(seed=1)
  model, windows, batches = model_and_batches(columns, window_length=8)
  bounds = np.stack([windows.starts, windows.ends], axis=1)
  batch = batches.assemble(tf.constant(bounds[:7]))
  tower = model.query_tower
  pooled = tf.boolean_mask(tower.pool_windows(
      batch[rating_windows.CONTEXT_IDS], batch[rating_windows.CONTEXT_SECONDS],
      batch[rating_windows.POSITION_SECONDS], batch[rating_windows.MASK]),
      batch[rating_windows.VALID])
  per_rating = tower._history(model.with_history(as_examples(batch)))  # pylint: disable=protected-access
  assert pooled.shape == per_rating.shape and pooled.shape[0] == (windows.ends -
                                                                   windows.starts)[:7].sum()
  np.testing.assert_allclose(pooled.numpy(), per_rating.numpy(), rtol=1e-5, atol=1e-6)


def tfrs_loss(model, examples):
  """tfrs.tasks.Retrieval on the model's own towers: the reference the model's loss is
  written to reproduce."""
  import tensorflow_recommenders as tfrs  # pylint: disable=g-import-not-at-top
  movie_ids = tf.reshape(examples[rm.CANDIDATE_ID_FEATURE], [-1])
  task = tfrs.tasks.Retrieval(temperature=model.temperature, remove_accidental_hits=True)
  return task(model.query_tower(model.with_history(examples)),
              model.candidate_tower(examples), compute_metrics=False,
              candidate_sampling_probability=tf.gather(model.movie_probabilities, movie_ids),
              candidate_ids=movie_ids).numpy()


def test_the_loss_is_tfrs_retrieval_and_one_rating_windows_change_nothing():
  """With one rating per window nothing but the rating itself shares its window, so the
  window loss must be TFRS' in-batch softmax (log-q correction, accidental hits), as the
  per-example loss is."""
  columns = ratings(seed=2)
  model, windows, batches = model_and_batches(columns, window_length=1)
  bounds = np.stack([windows.starts, windows.ends], axis=1)
  batch = batches.assemble(tf.constant(bounds[10:74]))
  expected = tfrs_loss(model, as_examples(batch))
  assert len(set(batch[rm.CANDIDATE_ID_FEATURE].numpy().reshape(-1))) < 64  # hits to remove
  assert model.compute_loss(as_examples(batch)).numpy() == pytest.approx(expected, rel=1e-5)
  assert model.compute_loss(batch).numpy() == pytest.approx(expected, rel=1e-5)


def test_a_window_excludes_its_own_ratings_from_the_negatives():
  columns = ratings(seed=2)
  model, windows, batches = model_and_batches(columns, window_length=8)
  bounds = np.stack([windows.starts, windows.ends], axis=1)
  batch = batches.assemble(tf.constant(bounds[:9]))
  assert (windows.ends - windows.starts)[:9].max() > 1
  assert model.compute_loss(batch).numpy() < tfrs_loss(model, as_examples(batch))


def test_a_window_batch_trains():
  columns = ratings(seed=3)
  model, _, batches = model_and_batches(columns, window_length=16)
  history = model.fit(batches.dataset(64, seed=0), epochs=3, verbose=0)
  losses = history.history["loss"]
  assert np.isfinite(losses).all() and losses[-1] < losses[0]
