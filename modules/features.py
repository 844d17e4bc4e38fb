"""Every feature name the project uses, in one place.

Raw names are what MovieLensExampleGen writes into tf.Examples (and what the curated
schemas in `schemas/` declare); transformed names are what `preprocessing_fn` emits.
Everything else (readers, schemas tests, models, serving) imports from here.
"""

# --- Raw features: ratings Examples -------------------------------------------------
USER_ID = "user_id"
MOVIE_ID = "movie_id"
MOVIE_TITLE = "movie_title"
MOVIE_GENRES = "movie_genres"  # list of genre names
MOVIE_RELEASE_YEAR = "movie_release_year"  # absent when unknown
USER_RATING = "user_rating"  # the label of the ranking model
TIMESTAMP = "timestamp"  # unix seconds

# User demographics: present only in layouts that ship them (ml-100k, ml-1m).
USER_AGE = "user_age"
USER_GENDER = "user_gender"
USER_OCCUPATION = "user_occupation"
USER_ZIP_CODE = "user_zip_code"

USER_DEMOGRAPHIC_FEATURES = (USER_AGE, USER_GENDER, USER_OCCUPATION, USER_ZIP_CODE)

# Movie features shared by ratings Examples and candidate (catalogue) Examples.
MOVIE_FEATURES = (MOVIE_ID, MOVIE_TITLE, MOVIE_GENRES, MOVIE_RELEASE_YEAR)

RATING_FEATURES = (USER_ID, *MOVIE_FEATURES, USER_RATING, TIMESTAMP)

LABEL = USER_RATING
RATING_OUTPUT = "predictions"  # the ranking model's output key: the predicted rating

# --- Transformed features (outputs of modules.preprocessing.preprocessing_fn) --------
def transformed_name(name: str) -> str:
  """Name of the transformed version of raw feature `name`."""
  return f"{name}_xf"


ZIP_PREFIX_LENGTH = 3
USER_ZIP_PREFIX = "user_zip_prefix"
MOVIE_TITLE_TOKENS = "movie_title_tokens"
USER_AGE_BUCKET = "user_age_bucket"
TIMESTAMP_BUCKET = "timestamp_bucket"
AGE_BUCKETS = 6  # quantile buckets of user age
TIMESTAMP_BUCKETS = 20  # quantile buckets of rating time

# The movies a user rated strictly before the example's time (training split), most recent
# first: a query-tower input built by the retrieval Trainer from the training data
# (modules/user_history.py) and given explicitly (as raw movie ids) to the exported query
# model at serving time.
USER_HISTORY = "user_history"
# When each of those movies was rated (unix seconds, aligned with USER_HISTORY): the query
# tower pools the history again weighted by closeness in time to the query, and embeds the
# gap before the query in its sequence encoder.
USER_HISTORY_TIMESTAMPS = "user_history_timestamps"
# Rating time in unix seconds, passed through Transform unchanged (int64; no analyzer).
# Causality is decided on it exactly: an example's history holds only ratings made
# strictly before this second (float days would merge ratings a minute apart).
TIMESTAMP_SECONDS = "timestamp_seconds"
SECONDS_PER_DAY = 86400.0

# Vocabulary files written by Transform, by the feature they index.
VOCABULARY_NAMES = {
    USER_ID: "user_id_vocab",
    MOVIE_ID: "movie_id_vocab",
    MOVIE_GENRES: "movie_genres_vocab",
    MOVIE_TITLE_TOKENS: "movie_title_tokens_vocab",
    USER_OCCUPATION: "user_occupation_vocab",
    USER_GENDER: "user_gender_vocab",
    USER_ZIP_PREFIX: "user_zip_prefix_vocab",
}
OOV_BUCKETS = 1

# Example split names.
TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
CATALOG_SPLIT = "all"  # the single split of the candidate (movie catalogue) Examples
