"""Ingestion of every GroupLens layout, and every bad-row case."""
import os

import pytest

from components.movielens_example_gen import layouts, synthetic


def read_all(data_dir, skip=False):
  layout = layouts.detect_layout(data_dir)
  bad = layouts.BadRows(skip=skip)
  movies = layouts.read_movies(layout, data_dir, bad)
  users = layouts.read_users(layout, data_dir, bad)
  ratings = list(layouts.read_ratings(layout, data_dir, movies, users, bad))
  return layout, movies, users, ratings, bad


@pytest.mark.parametrize("name", sorted(layouts.LAYOUTS))
def test_every_layout_reads_the_same_data(tmp_path, synthetic_data, name):
  layout, movies, users, ratings, bad = read_all(synthetic.write(synthetic_data, str(tmp_path), name))
  assert layout.name == name
  assert ratings == synthetic_data.ratings
  assert sorted(movies.values(), key=lambda m: int(m.movie_id)) == synthetic_data.movies
  assert bad.total == 0
  if name == "ml-latest":
    assert users == {}  # no demographics in this layout
  else:
    assert set(users) == {u.user_id for u in synthetic_data.users}
    assert all(u.gender in ("M", "F") for u in users.values())


def test_ml_1m_codes_are_decoded(tmp_path, synthetic_data):
  _, _, users, _, _ = read_all(synthetic.write(synthetic_data, str(tmp_path), "ml-1m"))
  assert {u.age for u in users.values()} <= set(layouts.ML_1M_AGE_CODES)
  assert {u.occupation for u in users.values()} <= set(layouts.ML_1M_OCCUPATIONS)


def test_real_ml_100k_movie_with_unknown_release_date():
  data_dir = os.environ.get("MOVIELENS_DATA_DIR")
  if not data_dir:
    pytest.skip("MOVIELENS_DATA_DIR not set")
  layout = layouts.detect_layout(data_dir)
  movies = layouts.read_movies(layout, data_dir, layouts.BadRows())
  assert len(movies) == 1682
  assert movies["1"].title == "Toy Story (1995)" and movies["1"].release_year == 1995
  assert movies["267"].release_year is None


def _append(path, text, mode="a"):
  with open(path, mode + "b") as f:
    f.write(text if isinstance(text, bytes) else text.encode("latin-1"))


@pytest.mark.parametrize("bad_line, message", [
    ("1\t2\t3\n", "has 3 fields, expected 4"),
    ("1\t2\tfive\t881250949\n", "rating 'five' is not a number"),
    ("1\t2\t7\t881250949\n", "rating '7' is out of range 1..5"),
    ("1\t99999\t3\t881250949\n", "movie id 99999 is not in u.item"),
    ("99999\t2\t3\t881250949\n", "user id 99999 is not in u.user"),
    ("1\t2\t3\tyesterday\n", "timestamp 'yesterday' is not an integer"),
])
def test_bad_rating_row_names_file_and_line(tmp_path, synthetic_data, bad_line, message):
  data_dir = synthetic.write(synthetic_data, str(tmp_path), "ml-100k")
  ratings_file = os.path.join(data_dir, "u.data")
  n_lines = sum(1 for _ in open(ratings_file))
  _append(ratings_file, bad_line)
  with pytest.raises(layouts.MovieLensDataError) as err:
    read_all(data_dir)
  assert f"u.data:{n_lines + 1}: " in str(err.value)
  assert message in str(err.value)
  # Opt-in: the row is skipped, counted and reported; everything else is read.
  _, _, _, ratings, bad = read_all(data_dir, skip=True)
  assert len(ratings) == len(synthetic_data.ratings)
  assert bad.total == 1
  assert f"u.data:{n_lines + 1}" in bad.summary()


def test_unreadable_encoding_names_file_and_line(tmp_path, synthetic_data):
  data_dir = synthetic.write(synthetic_data, str(tmp_path), "ml-latest")
  movies_file = os.path.join(data_dir, "movies.csv")
  n_lines = sum(1 for _ in open(movies_file, encoding="utf-8"))
  _append(movies_file, b"999,Caf\xe9 (1999),Drama\n")
  with pytest.raises(layouts.MovieLensDataError, match=rf"movies.csv:{n_lines + 1}: .*not valid utf-8"):
    read_all(data_dir)


def test_bad_movie_row_in_skip_mode_also_skips_its_ratings(tmp_path, synthetic_data):
  data_dir = synthetic.write(synthetic_data, str(tmp_path), "ml-1m")
  movies_file = os.path.join(data_dir, "movies.dat")
  lines = open(movies_file, encoding="latin-1").read().splitlines()
  lines[0] = lines[0].replace("::", "", 1)  # movie 1 loses a separator
  open(movies_file, "w", encoding="latin-1").write("\n".join(lines) + "\n")
  _, movies, _, ratings, bad = read_all(data_dir, skip=True)
  n_movie_1 = sum(r.movie_id == "1" for r in synthetic_data.ratings)
  assert "1" not in movies
  assert len(ratings) == len(synthetic_data.ratings) - n_movie_1
  assert bad.skipped[("movies.dat", "field count")] == 1
  assert bad.skipped[("ratings.dat", "unknown movie")] == n_movie_1


def test_directory_without_movielens_files_lists_expected_files(tmp_path):
  with pytest.raises(layouts.MovieLensDataError) as err:
    layouts.detect_layout(str(tmp_path))
  for expected in ("u.data", "ratings.dat", "ratings.csv", str(tmp_path)):
    assert expected in str(err.value)


def test_duplicate_movie_id_names_file_and_line(tmp_path, synthetic_data):
  data_dir = synthetic.write(synthetic_data, str(tmp_path), "ml-1m")
  movies_file = os.path.join(data_dir, "movies.dat")
  n_lines = sum(1 for _ in open(movies_file, encoding="latin-1"))
  _append(movies_file, "1::Again (1990)::Drama\n")
  with pytest.raises(layouts.MovieLensDataError, match=rf"movies.dat:{n_lines + 1}: movie id 1 appears twice"):
    read_all(data_dir)


def test_headerless_ratings_csv_keeps_its_first_rating_with_a_warning(tmp_path, synthetic_data,
                                                                      caplog):
  data_dir = synthetic.write(synthetic_data, str(tmp_path), "ml-latest")
  ratings_file = os.path.join(data_dir, "ratings.csv")
  lines = open(ratings_file, encoding="utf-8").read().splitlines()
  open(ratings_file, "w", encoding="utf-8").write("\n".join(lines[1:]) + "\n")  # no header
  with caplog.at_level("WARNING", logger="movrec.data"):
    _, _, _, ratings, bad = read_all(data_dir)
  assert ratings == synthetic_data.ratings and bad.total == 0
  assert "ratings.csv:1: expected a header row" in caplog.text


def test_utf8_movie_file_where_latin1_is_expected_is_read_as_utf8_with_a_warning(
    tmp_path, synthetic_data, caplog):
  data_dir = synthetic.write(synthetic_data, str(tmp_path), "ml-100k")
  movies_file = os.path.join(data_dir, "u.item")
  lines = open(movies_file, encoding="latin-1").read().splitlines()
  fields = lines[0].split("|")
  fields[1] = "Café Society (1995)"
  lines[0] = "|".join(fields)
  open(movies_file, "w", encoding="utf-8").write("\n".join(lines) + "\n")
  with caplog.at_level("WARNING", logger="movrec.data"):
    _, movies, _, _, _ = read_all(data_dir)
  assert movies[fields[0]].title == "Café Society (1995)"
  assert "u.item:1: expected latin-1" in caplog.text
  # A real latin-1 file (é as one byte) is unchanged and says nothing.
  open(movies_file, "w", encoding="latin-1").write("\n".join(lines) + "\n")
  caplog.clear()
  with caplog.at_level("WARNING", logger="movrec.data"):
    _, movies, _, _, _ = read_all(data_dir)
  assert movies[fields[0]].title == "Café Society (1995)" and not caplog.text


def test_empty_users_file_is_an_error_not_a_skipped_check(tmp_path, synthetic_data):
  data_dir = synthetic.write(synthetic_data, str(tmp_path), "ml-1m")
  open(os.path.join(data_dir, "users.dat"), "w").close()
  with pytest.raises(layouts.MovieLensDataError, match=r"users.dat: no users could be read"):
    read_all(data_dir)
