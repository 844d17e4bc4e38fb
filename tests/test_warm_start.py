"""Warm start: variables copied by checkpoint path, embedding rows remapped by vocabulary."""
import os

import numpy as np
import pytest

from modules import features as F
from modules import retrieval_model as rm
from modules import warm_start
from modules.hparams import RetrievalHParams
import test_retrieval_model as tiny  # tests/ is on sys.path (rootdir-relative import)

_xf = F.transformed_name


class Vocabularies:
  """The one TFTransformOutput method warm start uses, over vocabulary files on disk."""

  def __init__(self, directory, movies, users):
    self.files = {}
    for raw, keys in ((F.MOVIE_ID, movies), (F.USER_ID, users)):
      name = F.VOCABULARY_NAMES[raw]
      self.files[name] = os.path.join(directory, name)
      os.makedirs(directory, exist_ok=True)
      with open(self.files[name], "w") as f:
        f.write("".join(f"{k}\n" for k in keys))
    for raw in (F.MOVIE_GENRES, F.MOVIE_TITLE_TOKENS):  # same ids in both "runs"
      name = F.VOCABULARY_NAMES[raw]
      self.files[name] = os.path.join(directory, name)
      with open(self.files[name], "w") as f:
        f.write("".join(f"t{i}\n" for i in range(10)))

  def vocabulary_file_by_name(self, name):
    return self.files[name]


def built_model(seed):
  """With the history embedding tied to the movie embedding: one variable, two paths."""
  hp = RetrievalHParams(output_dim=8, id_embedding_dim=8, seed=seed)
  users, movies = tiny.tiny_data()
  model = rm.build(tiny.SIZES, tiny.AVAILABLE, hp, rm.movie_probabilities(movies, tiny.N_MOVIES),
                   tiny.history_for(users, movies))
  model.compute_loss(tiny.batch(users[:16], movies[:16]))
  return model


def towers(model):
  return {"query": model.query_tower, "candidate": model.candidate_tower}


def test_rows_follow_their_keys_and_everything_else_is_copied(tmp_path):
  old_movies = [f"m{i}" for i in range(tiny.N_MOVIES - 1)]  # + 1 OOV row
  # The new run renumbers: reversed order, one movie gone, one new movie ("new").
  new_movies = ["new"] + old_movies[::-1][:-1]
  users = [f"u{i}" for i in range(tiny.N_USERS - 1)]
  old = built_model(seed=1)
  warm_start.save(str(tmp_path / "old"), towers(old),
                  Vocabularies(str(tmp_path / "v_old"), old_movies, users))

  new = built_model(seed=2)
  fresh = new.candidate_tower.id_embedding.embeddings.numpy().copy()
  summary = warm_start.restore(str(tmp_path / "old"), towers(new),
                               Vocabularies(str(tmp_path / "v_new"), new_movies, users))

  old_table = old.candidate_tower.id_embedding.embeddings.numpy()
  new_table = new.candidate_tower.id_embedding.embeddings.numpy()
  for row, key in enumerate(new_movies):
    if key == "new":
      np.testing.assert_array_equal(new_table[row], fresh[row])  # never seen: initialised
    else:
      np.testing.assert_array_equal(new_table[row], old_table[old_movies.index(key)])
  np.testing.assert_array_equal(new_table[-1], old_table[-1])  # the OOV row
  np.testing.assert_array_equal(new.query_tower.id_embedding.embeddings.numpy(),
                                old.query_tower.id_embedding.embeddings.numpy())
  for a, b in zip(new.query_tower.mlp.weights, old.query_tower.mlp.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert new.query_tower.history_embedding is new.candidate_tower.id_embedding
  assert summary["skipped"] == []
  assert summary["copied"] > 0
  movie_table = [p for p in summary["remapped"] if p.startswith("candidate/id_embedding")]
  assert movie_table and summary["remapped"][movie_table[0]] == len(new_movies)  # -new +OOV


def test_a_model_saved_without_warm_start_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no warm-start checkpoint"):
    warm_start.restore(str(tmp_path), towers(built_model(seed=1)), None)
