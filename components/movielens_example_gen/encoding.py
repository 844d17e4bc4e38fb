"""Rating and movie tf.Examples: what features each carries, and a fast serializer.

A rating's Example carries its movie's and its user's features, identical in every one of
their ratings. `ExampleEncoder` serializes those parts once per movie and per user and
only the rating's own three features per rating, by hand (the protobuf library's object
construction was two thirds of the cost): a `tf.train.Features` message is a map,
serialized as one length-delimited entry per feature, and concatenated serializations of a
protobuf message parse as their merge, so movie + user + rating entries are the
serialization of the union. `rating_example` builds the same Example the plain way; the
tests check the two agree.
"""

import struct
from typing import Dict, Optional

import tensorflow as tf

from components.movielens_example_gen import layouts
from modules import features as F

# Wire tags (field number << 3 | 2, "length-delimited") of the fields written by hand:
# Example.features, Features.feature's entries, a map entry's key, BytesList.value,
# FloatList.value and Int64List.value (packed) are field 1; a map entry's value is field
# 2; Feature's bytes_list / float_list / int64_list are fields 1 / 2 / 3.
_FIELD_1, _FIELD_2, _FIELD_3 = b"\x0a", b"\x12", b"\x1a"


def _bytes(values) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(
      value=[v.encode("utf-8") for v in values]))


def _ints(values) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _floats(values) -> tf.train.Feature:
  return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def movie_features(movie: layouts.Movie) -> Dict[str, tf.train.Feature]:
  feats = {
      F.MOVIE_ID: _bytes([movie.movie_id]),
      F.MOVIE_TITLE: _bytes([movie.title]),
      F.MOVIE_GENRES: _bytes(movie.genres),
  }
  if movie.release_year is not None:
    feats[F.MOVIE_RELEASE_YEAR] = _ints([movie.release_year])
  return feats


def user_features(user: layouts.User) -> Dict[str, tf.train.Feature]:
  return {
      F.USER_AGE: _ints([user.age]),
      F.USER_GENDER: _bytes([user.gender]),
      F.USER_OCCUPATION: _bytes([user.occupation]),
      F.USER_ZIP_CODE: _bytes([user.zip_code]),
  }


def rating_features(rating: layouts.Rating) -> Dict[str, tf.train.Feature]:
  return {
      F.USER_ID: _bytes([rating.user_id]),
      F.USER_RATING: _floats([rating.rating]),
      F.TIMESTAMP: _ints([rating.timestamp]),
  }


def movie_example(movie: layouts.Movie) -> tf.train.Example:
  return tf.train.Example(features=tf.train.Features(feature=movie_features(movie)))


def rating_example(rating: layouts.Rating, movie: layouts.Movie,
                   user: Optional[layouts.User]) -> tf.train.Example:
  feats = {**movie_features(movie), **rating_features(rating)}
  if user is not None:
    feats.update(user_features(user))
  return tf.train.Example(features=tf.train.Features(feature=feats))


def _map_entries(feats: Dict[str, tf.train.Feature]) -> bytes:
  return tf.train.Features(feature=feats).SerializeToString()


_ONE_BYTE = [bytes((n,)) for n in range(0x80)]


def _varint(n: int) -> bytes:
  if 0 <= n < 0x80:  # most lengths
    return _ONE_BYTE[n]
  n &= 0xFFFFFFFFFFFFFFFF  # a negative int64 is its 64-bit two's complement
  out = bytearray()
  while True:
    low, n = n & 0x7F, n >> 7
    if not n:
      out.append(low)
      return bytes(out)
    out.append(low | 0x80)


def _delimited(tag: bytes, payload: bytes) -> bytes:
  return tag + _varint(len(payload)) + payload


def _entry(name: bytes, kind: bytes, values: bytes) -> bytes:
  """One Features map entry: key `name`, a Feature whose list (`kind`) holds `values`."""
  return _delimited(_FIELD_1, _delimited(_FIELD_1, name) + _delimited(
      _FIELD_2, _delimited(kind, _delimited(_FIELD_1, values))))


_USER_ID, _USER_RATING, _TIMESTAMP = (
    name.encode() for name in (F.USER_ID, F.USER_RATING, F.TIMESTAMP))


def _rating_entries(rating: layouts.Rating) -> bytes:
  """_map_entries(rating_features(rating)), without building protobuf objects."""
  return (_entry(_USER_ID, _FIELD_1, rating.user_id.encode("utf-8"))
          + _entry(_USER_RATING, _FIELD_2, struct.pack("<f", rating.rating))
          + _entry(_TIMESTAMP, _FIELD_3, _varint(rating.timestamp)))


class ExampleEncoder:
  """Serialized rating Examples, each movie's and user's features serialized once."""

  def __init__(self, movies: Dict[str, layouts.Movie], users: Dict[str, layouts.User]):
    self._movies = movies
    self._users = users
    self._movie_parts: Dict[str, bytes] = {}
    self._user_parts: Dict[str, bytes] = {}

  def _movie_part(self, movie_id: str) -> bytes:
    part = self._movie_parts.get(movie_id)
    if part is None:
      part = self._movie_parts[movie_id] = _map_entries(
          movie_features(self._movies[movie_id]))
    return part

  def _user_part(self, user_id: str) -> bytes:
    part = self._user_parts.get(user_id)
    if part is None:
      user = self._users.get(user_id)
      part = self._user_parts[user_id] = _map_entries(user_features(user)) if user else b""
    return part

  def encode(self, rating: layouts.Rating) -> bytes:
    body = (self._movie_part(rating.movie_id) + self._user_part(rating.user_id)
            + _rating_entries(rating))
    return _delimited(_FIELD_1, body)
