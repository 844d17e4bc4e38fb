"""TFMA configuration of the ranking model's Evaluator: metrics, slices, blessing rule."""

import tensorflow_model_analysis as tfma

from modules import features as F

RMSE = "root_mean_squared_error"
MAE = "mean_absolute_error"


def eval_config(rmse_bound: float, max_regression: float,
                has_demographics: bool) -> tfma.EvalConfig:
  """RMSE (gated), MAE and example count, overall and by gender, occupation and genre.

  Blessed when RMSE < rmse_bound and, if a blessed baseline exists, RMSE is at most
  `max_regression` above the baseline's (TFX's Evaluator ignores the change threshold
  when there is no baseline yet).
  """
  slice_features = ([F.USER_GENDER, F.USER_OCCUPATION] if has_demographics else [])
  slice_features.append(F.MOVIE_GENRES)  # multivalent: one slice per genre
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(signature_name="serving_default", label_key=F.LABEL,
                                  preprocessing_function_names=["transform_features"])],
      slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[name])
                                            for name in slice_features],
      metrics_specs=[tfma.MetricsSpec(metrics=[
          tfma.MetricConfig(class_name="ExampleCount"),
          tfma.MetricConfig(class_name="MeanAbsoluteError", config='"name": "%s"' % MAE),
          tfma.MetricConfig(
              class_name="RootMeanSquaredError", config='"name": "%s"' % RMSE,
              # Gate on the overall RMSE only; slices are reported, not gated.
              per_slice_thresholds=[tfma.PerSliceMetricThreshold(
                  slicing_specs=[tfma.SlicingSpec()],
                  threshold=tfma.MetricThreshold(
                      value_threshold=tfma.GenericValueThreshold(
                          upper_bound={"value": rmse_bound}),
                      change_threshold=tfma.GenericChangeThreshold(
                          direction=tfma.MetricDirection.LOWER_IS_BETTER,
                          absolute={"value": max_regression})))]),
      ])])


def load_metrics(evaluation_uri: str) -> dict:
  """{slice name: {metric: value}} of a ranking Evaluator's output ("" = overall;
  "user_gender=F" etc.)."""
  from tensorflow.python.util import deprecation  # pylint: disable=g-import-not-at-top
  with deprecation.silence():  # TFMA's reader warns once a process, on the console
    result = tfma.load_eval_result(evaluation_uri)
  out = {}
  for slice_key, metrics in result.slicing_metrics:
    name = ",".join(f"{k}={v}" for k, v in slice_key)
    values = metrics.get("", {}).get("", {})
    out[name] = {metric: next(iter(v.values())) for metric, v in values.items()
                 if isinstance(v, dict) and v}
  return out
