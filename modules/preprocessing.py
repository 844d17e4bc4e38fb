"""Transform's preprocessing_fn: vocabularies and numeric features for both models.

Loaded by TFX by import path (`modules.preprocessing.preprocessing_fn`). Vocabularies are
tensorflow-transform analyzers over the train split (not Keras `adapt`), so the same
ids are used in training, in the exported serving signatures and by the index builder.

Movie features are computed from movie inputs only, so the same graph can transform the
candidate catalogue. User demographics are transformed when the data has them.
"""



import tensorflow as tf
import tensorflow_transform as tft

from modules import features as F

_xf = F.transformed_name
_TITLE_PUNCTUATION = r"[^\p{L}\p{N}']+"  # anything but letters, digits and apostrophes


def _dense(x, default):
  """A [batch, 1] dense tensor from a FixedLen tensor or a VarLen SparseTensor."""
  if isinstance(x, tf.SparseTensor):
    return tft.sparse_tensor_to_dense_with_shape(x, [None, 1], default_value=default)
  return x


def _vocab(x, feature: str):
  return tft.compute_and_apply_vocabulary(
      x, num_oov_buckets=F.OOV_BUCKETS, vocab_filename=F.VOCABULARY_NAMES[feature])


def _zscore_with_missing(x: tf.SparseTensor):
  """z-score of an optional scalar feature; missing values become 0 (the mean)."""
  values = tf.cast(x.values, tf.float32)
  mean = tft.mean(values)
  std = tf.sqrt(tft.var(values)) + 1e-6
  dense = _dense(tf.SparseTensor(x.indices, values, x.dense_shape), float("nan"))
  dense = tf.where(tf.math.is_nan(dense), mean, dense)
  return (dense - mean) / std


def title_tokens(title):
  """Lower-cased word tokens of a [batch, 1] title tensor, as a SparseTensor."""
  cleaned = tf.strings.regex_replace(tf.strings.lower(tf.reshape(title, [-1])),
                                     _TITLE_PUNCTUATION, " ")
  return tf.strings.split(cleaned).to_sparse()


def movie_transforms(inputs):
  """Transforms of the movie features (shared by ratings and the catalogue)."""
  outputs = {
      _xf(F.MOVIE_ID): _vocab(_dense(inputs[F.MOVIE_ID], ""), F.MOVIE_ID),
      _xf(F.MOVIE_GENRES): _vocab(inputs[F.MOVIE_GENRES], F.MOVIE_GENRES),
      _xf(F.MOVIE_TITLE_TOKENS): _vocab(
          title_tokens(_dense(inputs[F.MOVIE_TITLE], "")), F.MOVIE_TITLE_TOKENS),
  }
  year = inputs[F.MOVIE_RELEASE_YEAR]
  if not isinstance(year, tf.SparseTensor):  # declared dense: nothing missing
    year = tf.sparse.from_dense(year)
  outputs[_xf(F.MOVIE_RELEASE_YEAR)] = _zscore_with_missing(year)
  return outputs


def user_transforms(inputs):
  """Transforms of the user id and, when present, the user demographics."""
  outputs = {_xf(F.USER_ID): _vocab(_dense(inputs[F.USER_ID], ""), F.USER_ID)}
  if F.USER_AGE in inputs:
    age = tf.cast(_dense(inputs[F.USER_AGE], 0), tf.float32)
    outputs[_xf(F.USER_AGE)] = tft.scale_to_z_score(age)
    outputs[_xf(F.USER_AGE_BUCKET)] = tft.bucketize(age, F.AGE_BUCKETS)
    outputs[_xf(F.USER_GENDER)] = _vocab(_dense(inputs[F.USER_GENDER], ""), F.USER_GENDER)
    outputs[_xf(F.USER_OCCUPATION)] = _vocab(
        _dense(inputs[F.USER_OCCUPATION], ""), F.USER_OCCUPATION)
    zip_prefix = tf.strings.substr(_dense(inputs[F.USER_ZIP_CODE], ""), 0,
                                   F.ZIP_PREFIX_LENGTH)
    outputs[_xf(F.USER_ZIP_PREFIX)] = _vocab(zip_prefix, F.USER_ZIP_PREFIX)
  return outputs


def context_transforms(inputs):
  """Time of the rating: scaled, bucketized at quantiles, and as exact unix seconds (what
  history causality and the time-aware history features compare against)."""
  raw = _dense(inputs[F.TIMESTAMP], 0)
  timestamp = tf.cast(raw, tf.float32)
  return {
      _xf(F.TIMESTAMP): tft.scale_to_z_score(timestamp),
      _xf(F.TIMESTAMP_BUCKET): tft.bucketize(timestamp, F.TIMESTAMP_BUCKETS),
      _xf(F.TIMESTAMP_SECONDS): tf.cast(raw, tf.int64),
  }


def preprocessing_fn(inputs, custom_config=None):
  """tf.Transform entry point for the ratings Examples.

  `custom_config` carries only the code fingerprint that keys TFX's cache; unused here.
  """
  del custom_config
  outputs = {}
  outputs.update(user_transforms(inputs))
  outputs.update(movie_transforms(inputs))
  outputs.update(context_transforms(inputs))
  outputs[F.LABEL] = tf.cast(_dense(inputs[F.LABEL], 0.0), tf.float32)
  return outputs
