"""The curated schemas agree with modules/features.py and with each other."""
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

import schemas
from modules import features as F


def load(name):
  return text_format.Parse(open(schemas.schema_path(name)).read(), schema_pb2.Schema())


def names(schema):
  return {f.name for f in schema.feature}


def test_schemas_declare_exactly_the_feature_names():
  assert names(load(schemas.RATINGS)) == set(F.RATING_FEATURES)
  assert names(load(schemas.RATINGS_WITH_DEMOGRAPHICS)) == (
      set(F.RATING_FEATURES) | set(F.USER_DEMOGRAPHIC_FEATURES))
  assert names(load(schemas.MOVIES)) == set(F.MOVIE_FEATURES)


def test_shared_features_are_declared_identically():
  by_name = {}
  for name in (schemas.RATINGS, schemas.RATINGS_WITH_DEMOGRAPHICS, schemas.MOVIES):
    for feature in load(name).feature:
      by_name.setdefault(feature.name, []).append(feature)
  for name, declared in by_name.items():
    assert all(d == declared[0] for d in declared), name


def test_rating_domain():
  rating = next(f for f in load(schemas.RATINGS).feature if f.name == F.USER_RATING)
  assert (rating.float_domain.min, rating.float_domain.max) == (0.5, 5.0)
  assert rating.presence.min_fraction == 1.0
