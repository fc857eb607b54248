"""Analyzer settings: documented defaults, strict validation naming the key."""

from __future__ import annotations

import pytest

from supervisor.analyzer.settings import Settings, parse_settings
from supervisor.config import ConfigError


def test_an_empty_table_gives_the_documented_defaults():
    s = parse_settings({})
    assert s == Settings()
    assert (s.source, s.time_gap, s.stale_after, s.clock_skew, s.misalignment) == \
        ("auto", 60.0, 300.0, 5.0, 2.0)
    assert (s.jump_sigma, s.jump_min_samples, s.windows, s.publish_interval) == \
        (8.0, 50, (1.0, 10.0, 60.0), 0.1)


def test_every_key_in_the_docstring_table_is_a_setting():
    import supervisor.analyzer.settings as mod

    documented = {line.split()[0] for line in mod.__doc__.splitlines()
                  if line[:1].isalpha() and not line.startswith(("every", "table", "key"))
                  and "  " in line}
    assert documented == set(Settings.__dataclass_fields__)


def test_values_are_normalised():
    s = parse_settings({"windows": [60, 1, 10.5], "time_gap": 30, "ring_wait": 0,
                        "plugin_options": {"model": "/m.onnx"}})
    assert s.windows == (1.0, 10.5, 60.0) and s.time_gap == 30.0 and s.ring_wait == 0.0
    assert s.plugin_options == {"model": "/m.onnx"}


@pytest.mark.parametrize("raw, key, problem", [
    ({"colour": 1}, "colour", "unknown key"),
    ({"time_gap": 0}, "time_gap", "must be > 0"),
    ({"time_gap": "60"}, "time_gap", "expected number"),
    ({"clock_skew": True}, "clock_skew", "got bool"),
    ({"depth_levels": 2.5}, "depth_levels", "expected an integer > 0"),
    ({"windows": []}, "windows", "non-empty list"),
    ({"windows": [1, -2]}, "windows", "non-empty list"),
    ({"source": "nats"}, "source", "must be one of auto, ring, zmq"),
    ({"plugin_timeout": -1}, "plugin_timeout", "must be >= 0"),
    ({"plugin_options": 3}, "plugin_options", "expected table"),
])
def test_bad_settings_name_the_key(raw, key, problem):
    with pytest.raises(ConfigError) as err:
        parse_settings(raw, "/etc/mp.toml", "instances.x.analyzer.settings")
    assert err.value.key == f"instances.x.analyzer.settings.{key}"
    assert problem in err.value.problem
