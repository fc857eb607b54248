"""Configuration: every bad input names the file, the key and the problem; exit 78."""

import subprocess
import sys
from pathlib import Path

import pytest

from supervisor import config

DEMO = Path(__file__).resolve().parent.parent / "supervisor" / "data" / "demo.toml"

GOOD = """
[instances.okx_spot]
exchange = "okx"
market = "spot"
symbols = ["BTC-USDT"]
"""


def test_demo_config_is_valid_and_has_the_five_instances():
    cfg = config.load(str(DEMO))
    assert set(cfg.instances) == {"okx_spot", "okx_derivatives", "binance_spot",
                                  "binance_derivatives", "deribit_derivatives"}


def test_memory_limits_default_to_the_plan_per_instance():
    cfg = config.load(str(DEMO))
    limits = {n: (i.memory_soft_mb, i.memory_hard_mb) for n, i in cfg.instances.items()}
    assert limits == {"okx_derivatives": (150, 200), "okx_spot": (120, 160),
                      "binance_derivatives": (100, 140), "binance_spot": (80, 120),
                      "deribit_derivatives": (60, 100)}


def test_defaults_fill_unset_keys():
    inst = config.parse(GOOD).instance("okx_spot")
    assert inst.ring == "okx_spot" and inst.channels == {"books", "trades"}
    assert inst.ring_capacity == 1 << 24 and inst.enabled


@pytest.mark.parametrize("text, key, problem", [
    (GOOD + 'colour = "red"\n', "instances.okx_spot.colour", "unknown key"),
    (GOOD.replace('["BTC-USDT"]', '"BTC-USDT"'), "instances.okx_spot.symbols", "expected list"),
    (GOOD.replace('["BTC-USDT"]', "[]"), "instances.okx_spot.symbols", "empty symbol list"),
    (GOOD.replace('["BTC-USDT"]', '["btc/usdt"]'), "instances.okx_spot.symbols",
     "not a normalized symbol"),
    (GOOD + 'ws_url = "http://x"\n', "instances.okx_spot.ws_url", "not a ws/wss URL"),
    (GOOD + 'rest_url = "ftp://x"\n', "instances.okx_spot.rest_url", "not a http/https URL"),
    (GOOD + "ring_capacity = 1000\n", "instances.okx_spot.ring_capacity", "power of two"),
    (GOOD + "enabled = 1\n", "instances.okx_spot.enabled", "expected bool"),
    (GOOD + "book_depth = true\n", "instances.okx_spot.book_depth", "expected int"),
    (GOOD + 'channels = ["funding"]\n', "instances.okx_spot.channels", "not available"),
    (GOOD + 'zmq_pub = "tcp://nope"\n', "instances.okx_spot.zmq_pub", "ZeroMQ endpoint"),
    (GOOD + "memory_soft_mb = 300\n", "instances.okx_spot.memory_soft_mb", "< memory_hard_mb"),
    (GOOD.replace('"okx"', '"kraken"'), "instances.okx_spot.exchange", "must be one of"),
    (GOOD.replace('market = "spot"', ""), "instances.okx_spot.market", "required key"),
    (GOOD + "[bogus]\n", "bogus", "unknown section"),
    ("[instances]\n", "instances", "no instances configured"),
    (GOOD + "[aggregator]\nhealth_port = 70000\n", "aggregator.health_port", "not a TCP port"),
    (GOOD + 'analyzer = { colour = "red" }\n', "instances.okx_spot.analyzer.colour",
     "unknown key"),
    ("[instances.x\n", "(syntax)", ""),
])
def test_bad_config_names_key_and_problem(text, key, problem):
    with pytest.raises(config.ConfigError) as err:
        config.parse(text, "/etc/mp.toml")
    assert err.value.key == key
    assert problem in err.value.problem
    assert str(err.value).startswith(f"/etc/mp.toml: {key}: ")


def test_shared_zmq_endpoint_is_rejected():
    text = GOOD + 'zmq_pub = "tcp://127.0.0.1:5000"\n' + GOOD.replace("okx_spot", "b") \
        + 'zmq_snapshot = "tcp://127.0.0.1:5000"\n'
    with pytest.raises(config.ConfigError, match="already used by okx_spot.zmq_pub"):
        config.parse(text)


def test_unknown_instance_lists_the_configured_ones():
    with pytest.raises(config.ConfigError, match=r"unknown instance \(configured: okx_spot\)"):
        config.parse(GOOD).instance("okx_swap")


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(str(tmp_path / "absent.toml"))


def run_collector(*args, env=None):
    return subprocess.run([sys.executable, "-m", "supervisor.collector.main", *args],
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("body, instance, needle", [
    (GOOD, "okx_swap", "unknown instance"),
    (GOOD + "bogus = 1\n", "okx_spot", "instances.okx_spot.bogus: unknown key"),
    (GOOD.replace('["BTC-USDT"]', "[]"), "okx_spot", "empty symbol list"),
])
def test_collector_exits_78_with_one_clear_line(tmp_path, body, instance, needle):
    path = tmp_path / "mp.toml"
    path.write_text(body)
    proc = run_collector(instance, "--config", str(path))
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and str(path) in lines[0]


def test_config_path_comes_from_the_environment(tmp_path):
    import os
    path = tmp_path / "env.toml"
    path.write_text(GOOD + "bogus = 1\n")
    env = dict(os.environ, MARKETPRISM_CONFIG=str(path))
    proc = run_collector("okx_spot", env=env)
    assert proc.returncode == 78 and str(path) in proc.stderr


def test_config_check_command_reports_ok_and_errors(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD + "bogus = 1\n")
    cli = [sys.executable, "-m", "supervisor.cli", "config", "check", "--config"]
    ok = subprocess.run(cli + [str(good)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "okx_spot" in ok.stdout
    err = subprocess.run(cli + [str(bad)], capture_output=True, text=True, timeout=60)
    assert err.returncode == 78 and "bogus: unknown key" in err.stderr
