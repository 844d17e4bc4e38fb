"""Blessing decisions: absolute thresholds and the allowed regression against a baseline."""
import pytest

from components import blessing


def test_blessed_when_every_threshold_is_met():
  d = blessing.decide({"a": 0.5, "b": 0.2}, {"a": 0.4, "b": 0.2})
  assert d.blessed


def test_not_blessed_names_the_failing_metric():
  d = blessing.decide({"a": 0.3, "b": 0.5}, {"a": 0.4, "b": 0.2})
  assert not d.blessed
  assert len(d.reasons) == 1 and d.reasons[0].startswith("a = 0.3000")


def test_baseline_regression_beyond_the_margin_fails():
  assert blessing.decide({"a": 0.50}, {"a": 0.1}, baseline={"a": 0.505}, max_regression=0.01).blessed
  d = blessing.decide({"a": 0.48}, {"a": 0.1}, baseline={"a": 0.50}, max_regression=0.01)
  assert not d.blessed and "baseline" in d.reasons[0]


def test_threshold_on_an_unknown_metric_is_an_error():
  with pytest.raises(ValueError, match="unknown metric 'top_7'"):
    blessing.decide({"a": 1.0}, {"top_7": 0.1})
