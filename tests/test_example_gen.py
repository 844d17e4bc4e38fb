"""MovieLensExampleGen's executor on real Beam: what it writes, split by split, against a
plain-Python reading of the same files."""
import collections
import os

import pytest
import tensorflow as tf

from components.movielens_example_gen import encoding, executor, layouts, splits, synthetic
from modules import features as F


def run_executor(data_dir, out_dir, layout="ml-100k", **properties):
  return executor.run_outside_pipeline(data_dir, out_dir, layout, **properties)


def read_split(artifact, split):
  folder = os.path.join(artifact.uri, f"Split-{split}")
  files = [os.path.join(folder, name) for name in sorted(os.listdir(folder))]
  return [tf.train.Example.FromString(record.numpy())
          for record in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def key(example):
  f = example.features.feature
  return (f[F.USER_ID].bytes_list.value[0].decode(), f[F.MOVIE_ID].bytes_list.value[0].decode(),
          f[F.TIMESTAMP].int64_list.value[0])


def plain_read(data_dir):
  layout = layouts.detect_layout(data_dir)
  bad = layouts.BadRows()
  movies = layouts.read_movies(layout, data_dir, bad)
  users = layouts.read_users(layout, data_dir, bad)
  return movies, users, list(layouts.read_ratings(layout, data_dir, movies, users, bad))


def expected_eval_keys(ratings, split_method, **kw):
  """Each split's rule written out plainly, over the whole file at once."""
  if split_method == splits.SPLIT_LAST:
    by_user = collections.defaultdict(list)
    for r in ratings:
      by_user[r.user_id].append(r)
    return {(r.user_id, r.movie_id, r.timestamp)
            for rs in by_user.values() if len(rs) > 1
            for r in [max(rs, key=lambda r: (r.timestamp, r.movie_id))]}
  if split_method == splits.SPLIT_TEMPORAL:
    return {(r.user_id, r.movie_id, r.timestamp) for r in ratings
            if r.timestamp >= kw["cutoff"]}
  return {(r.user_id, r.movie_id, r.timestamp) for r in ratings
          if not splits.random_split_is_train(r, kw["seed"], kw["train_fraction"])}


@pytest.fixture(autouse=True)
def small_batches(monkeypatch):
  # Many batches, each user's ratings spread over several: the newest-per-user combiner
  # must merge across them (Beam runs in this process, so the patch reaches the DoFns).
  monkeypatch.setattr(executor, "RATINGS_PER_BATCH", 97)


@pytest.mark.parametrize("split_method", splits.SPLIT_METHODS)
def test_every_rating_lands_in_the_split_its_rule_gives(tmp_path, synthetic_dir, split_method):
  movies, users, ratings = plain_read(synthetic_dir)
  cutoff = sorted(r.timestamp for r in ratings)[int(0.8 * len(ratings))]
  examples, candidates = run_executor(synthetic_dir, str(tmp_path), split_method=split_method,
                                      temporal_cutoff=cutoff)
  train = [key(e) for e in read_split(examples, F.TRAIN_SPLIT)]
  eval_ = [key(e) for e in read_split(examples, F.EVAL_SPLIT)]
  assert sorted(train + eval_) == sorted((r.user_id, r.movie_id, r.timestamp) for r in ratings)
  assert set(eval_) == expected_eval_keys(ratings, split_method, cutoff=cutoff, seed=42,
                                          train_fraction=0.8)
  assert examples.get_int_custom_property(f"num_examples_{F.EVAL_SPLIT}") == len(eval_)
  assert len(read_split(candidates, F.CATALOG_SPLIT)) == len(movies)


def test_each_example_carries_its_rating_movie_and_user(tmp_path, synthetic_dir):
  movies, users, ratings = plain_read(synthetic_dir)
  examples, _ = run_executor(synthetic_dir, str(tmp_path))
  written = {key(e): e for split in (F.TRAIN_SPLIT, F.EVAL_SPLIT)
             for e in read_split(examples, split)}
  for r in ratings:
    assert written[(r.user_id, r.movie_id, r.timestamp)] == encoding.rating_example(
        r, movies[r.movie_id], users[r.user_id])


def test_layout_without_demographics_writes_no_user_features(tmp_path, synthetic_data):
  data_dir = synthetic.write(synthetic_data, str(tmp_path / "data"), "ml-latest")
  examples, _ = run_executor(data_dir, str(tmp_path / "out"), layout="ml-latest")
  example = read_split(examples, F.TRAIN_SPLIT)[0]
  assert F.USER_ID in example.features.feature
  assert F.USER_AGE not in example.features.feature


@pytest.mark.parametrize("rating", [
    layouts.Rating("7", "3", 4.0, 881250949), layouts.Rating("12345", "3", 0.5, 0),
    layouts.Rating("7", "3", 3.5, 2**40), layouts.Rating("7", "3", 5.0, 127)])
def test_encoder_serializes_what_the_plain_example_holds(rating):
  movie = layouts.Movie("3", "Amélie (2001)", ("Comedy", "Romance"), 2001)
  user = layouts.User("7", 24, "F", "artist", "85711")
  for users in ({"7": user, "12345": user}, {}):
    encoded = encoding.ExampleEncoder({"3": movie}, users).encode(rating)
    assert tf.train.Example.FromString(encoded) == encoding.rating_example(
        rating, movie, users.get(rating.user_id))


def test_newest_per_user_merges_partial_results_from_any_workers(synthetic_data):
  # The DirectRunner combines in one bundle; a distributed runner merges per-worker
  # accumulators, here three of them over interleaved batches.
  ratings = synthetic_data.ratings
  combine = executor._NewestPerUser(2)
  accumulators = [combine.create_accumulator() for _ in range(3)]
  for i in range(0, len(ratings), 97):
    accumulators[i // 97 % 3] = combine.add_input(accumulators[i // 97 % 3], ratings[i:i + 97])
  newest = combine.extract_output(combine.merge_accumulators(accumulators))
  by_user = collections.defaultdict(list)
  for r in ratings:
    by_user[r.user_id].append((r.timestamp, r.movie_id))
  assert newest == {u: sorted(keys, reverse=True)[:2] for u, keys in by_user.items()}
