"""Readers for the GroupLens MovieLens directory layouts.

Pure Python and streaming: every record comes with the file and line it was read from, so
that a bad row produces an error a person can act on ("u.data:1234: rating 7 is out of
range 1..5"). Nothing here imports TensorFlow; the Beam executor calls into it.

Supported layouts (detected from the files present):

* ``ml-100k``: ``u.data`` (tab-separated), ``u.item`` and ``u.user`` (``|``-separated,
  latin-1), genres as 19 0/1 flags.
* ``ml-1m`` (and ``ml-10m``, which has no ``users.dat``): ``ratings.dat``, ``movies.dat``,
  ``users.dat``, ``::``-separated, latin-1; age and occupation are codes.
* ``ml-latest`` (also ml-latest-small, ml-20m, ml-25m, ml-32m): ``ratings.csv`` and
  ``movies.csv`` with a header row, UTF-8, half-star ratings, no user demographics.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import re
from collections import Counter
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

from modules.errors import MovrecError


log = logging.getLogger("movrec.data")


class MovieLensDataError(MovrecError, ValueError):
  """A MovieLens file is missing or has a row that cannot be used.

  The message names the file and (1-based) line and says what was expected.
  Takes a single message argument so that Apache Beam can re-raise it with its
  step name appended without losing the type.
  """


# ml-100k genre flag order (the file u.genre), shipped here because u.genre is optional.
ML_100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western")

# ml-1m users.dat occupation codes (from the ml-1m README).
ML_1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer",
    "homemaker", "K-12 student", "lawyer", "programmer", "retired", "sales/marketing",
    "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer")
ML_1M_AGE_CODES = (1, 18, 25, 35, 45, 50, 56)

ML_LATEST_NO_GENRES = "(no genres listed)"

_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")
_YEAR_IN_DATE = re.compile(r"(\d{4})$")


@dataclasses.dataclass(frozen=True)
class Movie:
  movie_id: str
  title: str
  genres: Tuple[str, ...]
  release_year: Optional[int]


@dataclasses.dataclass(frozen=True)
class User:
  user_id: str
  age: int
  gender: str
  occupation: str
  zip_code: str


@dataclasses.dataclass(frozen=True)
class Rating:
  user_id: str
  movie_id: str
  rating: float
  timestamp: int


class BadRows:
  """What to do with a row that cannot be used: raise (default) or skip and count.

  Skipping is opt-in and never silent: counts per file and reason are kept and
  reported by the caller.
  """

  def __init__(self, skip: bool = False):
    self.skip = skip
    self.skipped: Counter = Counter()  # (file name, reason) -> rows
    self.examples: Dict[Tuple[str, str], str] = {}  # first message per key

  def handle(self, path: str, line_no: int, reason: str, detail: str) -> None:
    message = f"{path}:{line_no}: {detail}"
    if not self.skip:
      raise MovieLensDataError(
          message + "\n(Fix the file, or opt in to skipping bad rows with "
          "--skip-bad-rows; skipped rows are counted and reported.)")
    key = (os.path.basename(path), reason)
    self.skipped[key] += 1
    self.examples.setdefault(key, message)

  @property
  def total(self) -> int:
    return sum(self.skipped.values())

  def summary(self) -> str:
    if not self.skipped:
      return "no rows skipped"
    parts = [f"{n} in {file} ({reason}, e.g. {self.examples[(file, reason)]})"
             for (file, reason), n in sorted(self.skipped.items())]
    return f"skipped {self.total} bad rows: " + "; ".join(parts)


# --- Generic line reading ---------------------------------------------------------------

def _open_binary(path: str):
  if "://" in path:  # gs://, hdfs://, ...: go through TensorFlow's file systems.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile.GFile(path, "rb")
  return open(path, "rb")


def read_lines(path: str, encoding: str, bad_rows: BadRows,
               skip_header: bool = False) -> Iterator[Tuple[int, str]]:
  """Yields (1-based line number, decoded line without its newline); skips blank lines.

  skip_header: the first line is a header, unless it starts with a digit (a data row:
  read, with a warning, rather than a rating silently lost). A latin-1 file whose
  non-ASCII lines are valid UTF-8 is a UTF-8 file: those lines are read as UTF-8, with
  one warning per file, instead of becoming mojibake ("CafÃ©")."""
  try:
    handle = _open_binary(path)
  except (OSError, IOError) as e:
    raise MovieLensDataError(f"{path}: cannot be opened ({e}).") from e
  warned_utf8 = False
  with handle:
    for line_no, raw in enumerate(handle, start=1):
      if skip_header and line_no == 1:
        if not raw.lstrip()[:1].isdigit():
          continue
        log.warning("%s:1: expected a header row (e.g. userId,movieId,...), found data; "
                    "reading it as data", path)
      try:
        line = raw.decode(encoding)
      except UnicodeDecodeError as e:
        bad_rows.handle(path, line_no, "encoding",
                        f"bytes {raw[max(0, e.start - 10):e.end + 10]!r} are not valid "
                        f"{encoding}; expected a {encoding}-encoded file.")
        continue
      if encoding == "latin-1" and not raw.isascii():
        try:
          line = raw.decode("utf-8")
          if not warned_utf8:
            log.warning("%s:%d: expected latin-1 (the GroupLens release's encoding), found "
                        "UTF-8; reading the file's non-ASCII lines as UTF-8", path, line_no)
            warned_utf8 = True
        except UnicodeDecodeError:
          pass  # real latin-1
      line = line.rstrip("\r\n")
      if line.strip():
        yield line_no, line


def _split_fields(line: str, separator: str) -> Sequence[str]:
  if separator == ",":
    return next(csv.reader([line]))
  return line.split(separator)


def _parse_int(value: str, what: str) -> int:
  try:
    return int(value.strip())
  except ValueError:
    raise ValueError(f"{what} {value!r} is not an integer") from None


def _year_from(text: str, pattern: re.Pattern) -> Optional[int]:
  match = pattern.search(text.strip())
  return int(match.group(1)) if match else None


# --- Layouts ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Layout:
  """How one GroupLens release lays out its files."""
  name: str
  ratings_file: str
  movies_file: str
  users_file: Optional[str]  # None: the release has no user demographics
  separator: str
  encoding: str
  has_header: bool
  rating_range: Tuple[float, float]
  file_glob: str  # every data file of the layout; TFX fingerprints these for caching
  parse_movie: Callable[[Sequence[str]], Movie]
  parse_user: Optional[Callable[[Sequence[str]], User]]
  movie_fields: int
  movie_row: str  # what a movie line holds, for error messages
  write: Callable[[object, str], None]  # (synthetic data, directory): writes the files
  user_fields: int = 0
  user_row: str = ""  # what a user line holds
  ratings_separator: Optional[str] = None  # when it differs from `separator`

  def path(self, data_dir: str, file_name: str) -> str:
    return os.path.join(data_dir, file_name)

  def has_demographics(self, data_dir: str) -> bool:
    return self.users_file is not None and _exists(self.path(data_dir, self.users_file))

  def required_files(self) -> Tuple[str, ...]:
    return (self.ratings_file, self.movies_file)


def _parse_100k_movie(fields: Sequence[str]) -> Movie:
  movie_id, title, release_date = fields[0], fields[1], fields[2]
  flags = fields[5:]
  if any(flag not in ("0", "1") for flag in flags):
    raise ValueError(f"genre flags {'|'.join(flags)!r} must each be 0 or 1")
  genres = tuple(g for g, flag in zip(ML_100K_GENRES, flags) if flag == "1")
  year = _year_from(release_date, _YEAR_IN_DATE) or _year_from(title, _YEAR_IN_TITLE)
  return Movie(str(_parse_int(movie_id, "movie id")), title.strip(), genres, year)


def _parse_100k_user(fields: Sequence[str]) -> User:
  user_id, age, gender, occupation, zip_code = fields
  if gender not in ("M", "F"):
    raise ValueError(f"gender {gender!r} is not M or F")
  return User(str(_parse_int(user_id, "user id")), _parse_int(age, "age"), gender,
              occupation.strip(), zip_code.strip())


def _parse_dat_movie(fields: Sequence[str]) -> Movie:
  movie_id, title, genres = fields
  return Movie(str(_parse_int(movie_id, "movie id")), title.strip(),
               tuple(g for g in genres.strip().split("|") if g),
               _year_from(title, _YEAR_IN_TITLE))


def _parse_dat_user(fields: Sequence[str]) -> User:
  user_id, gender, age, occupation, zip_code = fields
  if gender not in ("M", "F"):
    raise ValueError(f"gender {gender!r} is not M or F")
  age_code = _parse_int(age, "age code")
  if age_code not in ML_1M_AGE_CODES:
    raise ValueError(f"age code {age_code} is not one of {ML_1M_AGE_CODES}")
  occupation_code = _parse_int(occupation, "occupation code")
  if not 0 <= occupation_code < len(ML_1M_OCCUPATIONS):
    raise ValueError(f"occupation code {occupation_code} is not in 0..20")
  return User(str(_parse_int(user_id, "user id")), age_code, gender,
              ML_1M_OCCUPATIONS[occupation_code], zip_code.strip())


def _parse_csv_movie(fields: Sequence[str]) -> Movie:
  movie_id, title, genres = fields
  genre_list = () if genres.strip() == ML_LATEST_NO_GENRES else tuple(
      g for g in genres.strip().split("|") if g)
  return Movie(str(_parse_int(movie_id, "movie id")), title.strip(), genre_list,
               _year_from(title, _YEAR_IN_TITLE))


def _write_lines(path: str, lines, encoding: str) -> None:
  with open(path, "w", encoding=encoding, newline="\n") as f:
    f.writelines(line + "\n" for line in lines)


def _write_csv(path: str, header, rows) -> None:
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)


def _write_100k(data, out_dir: str) -> None:
  _write_lines(os.path.join(out_dir, "u.data"),
               (f"{r.user_id}\t{r.movie_id}\t{int(r.rating)}\t{r.timestamp}"
                for r in data.ratings), "latin-1")
  _write_lines(os.path.join(out_dir, "u.item"),
               ("|".join([m.movie_id, m.title, f"01-Jan-{m.release_year}", "",
                          f"http://example.invalid/{m.movie_id}"] +
                         ["1" if g in m.genres else "0" for g in ML_100K_GENRES])
                for m in data.movies), "latin-1")
  _write_lines(os.path.join(out_dir, "u.user"),
               (f"{u.user_id}|{u.age}|{u.gender}|{u.occupation}|{u.zip_code}"
                for u in data.users), "latin-1")
  _write_lines(os.path.join(out_dir, "u.genre"),
               (f"{g}|{i}" for i, g in enumerate(ML_100K_GENRES)), "latin-1")


def _age_code(age: int) -> int:
  return max(code for code in ML_1M_AGE_CODES if code <= max(age, 1))


def _write_1m(data, out_dir: str) -> None:
  _write_lines(os.path.join(out_dir, "ratings.dat"),
               (f"{r.user_id}::{r.movie_id}::{int(r.rating)}::{r.timestamp}"
                for r in data.ratings), "latin-1")
  _write_lines(os.path.join(out_dir, "movies.dat"),
               (f"{m.movie_id}::{m.title}::{'|'.join(m.genres)}" for m in data.movies),
               "latin-1")
  _write_lines(os.path.join(out_dir, "users.dat"),
               (f"{u.user_id}::{u.gender}::{_age_code(u.age)}::{code}::{u.zip_code}"
                for u, code in zip(data.users, data.occupation_codes)), "latin-1")


def _write_latest(data, out_dir: str) -> None:
  _write_csv(os.path.join(out_dir, "ratings.csv"), ["userId", "movieId", "rating", "timestamp"],
             ([r.user_id, r.movie_id, f"{r.rating:.1f}", r.timestamp] for r in data.ratings))
  _write_csv(os.path.join(out_dir, "movies.csv"), ["movieId", "title", "genres"],
             ([m.movie_id, m.title, "|".join(m.genres) or ML_LATEST_NO_GENRES]
              for m in data.movies))


# One value per release layout: adding a release is one more entry here.
ML_100K = Layout(
    name="ml-100k", ratings_file="u.data", movies_file="u.item", users_file="u.user",
    separator="|", encoding="latin-1", has_header=False, rating_range=(1.0, 5.0),
    file_glob="u.*", parse_movie=_parse_100k_movie, parse_user=_parse_100k_user,
    movie_fields=5 + len(ML_100K_GENRES), user_fields=5, ratings_separator="\t",
    movie_row="id|title|release date|video date|url|19 genre flags",
    user_row="user id|age|gender|occupation|zip code", write=_write_100k)
ML_1M = Layout(
    name="ml-1m", ratings_file="ratings.dat", movies_file="movies.dat",
    users_file="users.dat", separator="::", encoding="latin-1", has_header=False,
    rating_range=(0.5, 5.0), file_glob="*.dat", parse_movie=_parse_dat_movie,
    parse_user=_parse_dat_user, movie_fields=3, user_fields=5,
    movie_row="movie id::title::genres",
    user_row="user id::gender::age code::occupation code::zip code", write=_write_1m)
ML_LATEST = Layout(
    name="ml-latest", ratings_file="ratings.csv", movies_file="movies.csv",
    users_file=None, separator=",", encoding="utf-8", has_header=True,
    rating_range=(0.5, 5.0), file_glob="*.csv", parse_movie=_parse_csv_movie,
    parse_user=None, movie_fields=3, movie_row="movie id, title, genres",
    write=_write_latest)

LAYOUTS = {layout.name: layout for layout in (ML_100K, ML_1M, ML_LATEST)}


def _exists(path: str) -> bool:
  if "://" in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile.exists(path)
  return os.path.isfile(path)


def expected_files_message(data_dir: str) -> str:
  lines = [f"  {layout.name}: " + ", ".join(
      layout.required_files() + ((layout.users_file + " (optional)",)
                                 if layout.users_file else ()))
           for layout in LAYOUTS.values()]
  return (f"{data_dir} does not hold a MovieLens release. Expected the files of one "
          "GroupLens layout:\n" + "\n".join(lines))


def detect_layout(data_dir: str) -> Layout:
  """The layout whose ratings and movies files are in `data_dir`."""
  for layout in LAYOUTS.values():
    if all(_exists(layout.path(data_dir, f)) for f in layout.required_files()):
      return layout
  raise MovieLensDataError(expected_files_message(data_dir))


# --- Readers ------------------------------------------------------------------------------

def _records(layout: Layout, path: str, separator: str, n_fields: int,
             parse: Callable[[Sequence[str]], object], what: str,
             bad_rows: BadRows) -> Iterator[Tuple[int, object]]:
  for line_no, line in read_lines(path, layout.encoding, bad_rows, layout.has_header):
    try:
      fields = _split_fields(line, separator)
    except csv.Error as e:
      bad_rows.handle(path, line_no, "malformed", f"not valid CSV ({e}).")
      continue
    if len(fields) != n_fields:
      bad_rows.handle(path, line_no, "field count",
                      f"has {len(fields)} fields, expected {n_fields} "
                      f"({what}, separated by {separator!r}).")
      continue
    try:
      yield line_no, parse(fields)
    except ValueError as e:
      bad_rows.handle(path, line_no, "bad value", f"{e}; expected {what}.")


def _unique_by_id(records, id_of, kind: str, path: str, bad_rows: BadRows) -> Dict[str, object]:
  """Records by id; a repeated id is a bad row."""
  by_id = {}
  for line_no, record in records:
    if id_of(record) in by_id:
      bad_rows.handle(path, line_no, "duplicate id",
                      f"{kind} id {id_of(record)} appears twice; expected unique ids.")
      continue
    by_id[id_of(record)] = record
  return by_id


def read_movies(layout: Layout, data_dir: str, bad_rows: BadRows) -> Dict[str, Movie]:
  path = layout.path(data_dir, layout.movies_file)
  what = layout.movie_row
  movies = _unique_by_id(
      _records(layout, path, layout.separator, layout.movie_fields, layout.parse_movie,
               what, bad_rows), lambda m: m.movie_id, "movie", path, bad_rows)
  if not movies:
    raise MovieLensDataError(f"{path}: no movies could be read; expected at least one.")
  return movies


def read_users(layout: Layout, data_dir: str, bad_rows: BadRows) -> Dict[str, User]:
  """User demographics by user id; empty when the layout has none."""
  if not layout.has_demographics(data_dir):
    return {}
  path = layout.path(data_dir, layout.users_file)
  what = layout.user_row
  users = _unique_by_id(
      _records(layout, path, layout.separator, layout.user_fields, layout.parse_user,
               what, bad_rows), lambda u: u.user_id, "user", path, bad_rows)
  if not users:  # else every rating's user check would be skipped
    raise MovieLensDataError(f"{path}: no users could be read; expected one user per line "
                             f"({what}), or no {layout.users_file} at all for data without "
                             "demographics.")
  return users


def read_ratings(layout: Layout, data_dir: str, movies: Dict[str, Movie],
                 users: Dict[str, User], bad_rows: BadRows) -> Iterator[Rating]:
  """Streams ratings, checking each against the rating range and the known ids."""
  path = layout.path(data_dir, layout.ratings_file)
  low, high = layout.rating_range

  def parse(fields: Sequence[str]) -> Rating:
    user_id, movie_id, rating, timestamp = fields
    try:
      value = float(rating)
    except ValueError:
      raise ValueError(f"rating {rating!r} is not a number") from None
    if not low <= value <= high:
      raise ValueError(f"rating {rating!r} is out of range {low:g}..{high:g}")
    stamp = _parse_int(timestamp, "timestamp")
    if stamp < 0:
      raise ValueError(f"timestamp {stamp} is negative")
    return Rating(str(_parse_int(user_id, "user id")),
                  str(_parse_int(movie_id, "movie id")), value, stamp)

  separator = layout.ratings_separator or layout.separator
  for line_no, rating in _records(layout, path, separator, 4, parse,
                                  "user id, movie id, rating, timestamp", bad_rows):
    if rating.movie_id not in movies:
      bad_rows.handle(path, line_no, "unknown movie",
                      f"movie id {rating.movie_id} is not in {layout.movies_file}; "
                      "expected every rated movie to be in the catalogue.")
      continue
    if users and rating.user_id not in users:
      bad_rows.handle(path, line_no, "unknown user",
                      f"user id {rating.user_id} is not in {layout.users_file}; "
                      "expected every rating's user to be listed.")
      continue
    yield rating
