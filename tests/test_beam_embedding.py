"""The Beam embedding step: a real SavedModel run by Beam's DirectRunner, in memory and
with worker processes, gives the same embeddings as running the model here."""

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
import numpy as np
import pytest
import tensorflow as tf

from components import beam_embedding
from modules import retrieval_export


class _Tower(tf.Module):
  """serve_tf_examples: {embedding: [x, 2x, x²], movie_id} of Examples with `x`, `movie_id`."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def serve(self, examples):
    parsed = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([], tf.float32),
                                            "movie_id": tf.io.FixedLenFeature([], tf.string)})
    x = parsed["x"]
    return {retrieval_export.EMBEDDING: tf.stack([x, 2 * x, x * x], axis=1),
            retrieval_export.MOVIE_ID_OUTPUT: parsed["movie_id"]}


def example(x: float, movie_id: str) -> bytes:
  return tf.train.Example(features=tf.train.Features(feature={
      "x": tf.train.Feature(float_list=tf.train.FloatList(value=[x])),
      "movie_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[movie_id.encode()])),
  })).SerializeToString()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("tower")
  tower = _Tower()
  for sub in (retrieval_export.QUERY_DIR, retrieval_export.CANDIDATE_DIR):
    tf.saved_model.save(tower, str(root / sub),
                        signatures={retrieval_export.EXAMPLES_SIGNATURE: tower.serve})
  return str(root)


@pytest.mark.parametrize("mode", ["in_memory", "multi_processing"])
def test_beam_embeddings_match_the_model_and_the_examples_order(tmp_path, model_dir, mode):
  serialized = [example(float(i), f"m{i}") for i in range(600)]
  data = tmp_path / "data"
  data.mkdir()
  for part in range(3):  # three files, as ExampleGen writes
    with tf.io.TFRecordWriter(str(data / f"part-{part}.gz"), options="GZIP") as writer:
      for s in serialized[part::3]:
        writer.write(s)
  options = PipelineOptions([f"--direct_running_mode={mode}", "--direct_num_workers=2"])

  embedded = beam_embedding.embed_with_beam(
      lambda: beam.Pipeline(options=options), str(tmp_path / "out"), {"model": model_dir},
      candidate_pattern=str(data / "*"), query_pattern=str(data / "*"))["model"]

  order = serialized[::-1]  # lookups follow the caller's order, not the files'
  embeddings, ids = embedded.embed_candidate_examples(order)
  x = np.arange(600, dtype=np.float32)[::-1]
  np.testing.assert_allclose(embeddings, np.stack([x, 2 * x, x * x], axis=1))
  assert list(ids) == [f"m{int(i)}" for i in x]
  np.testing.assert_allclose(embedded.embed_query_examples(order[:5]), embeddings[:5])
  with pytest.raises(KeyError, match="no query embedding"):
    embedded.embed_query_examples([example(-1.0, "unseen")])
