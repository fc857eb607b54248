"""``[instances.X.nats]``: the JetStream sink's table, its defaults and every bad value."""

import pytest

from supervisor import config

GOOD = """
[instances.okx_spot]
exchange = "okx"
market = "spot"
symbols = ["BTC-USDT"]
"""
NATS = GOOD + "[instances.okx_spot.nats]\n"


def test_no_nats_table_means_no_sink():
    assert config.parse(GOOD).instance("okx_spot").nats is None


def test_an_empty_nats_table_enables_the_sink_with_the_documented_defaults():
    nats = config.parse(NATS).instance("okx_spot").nats
    assert nats == config.NatsConfig(stream="marketprism_okx_spot")
    assert nats.enabled and nats.servers == ("nats://127.0.0.1:4222",)
    assert nats.subject_prefix == "marketprism" and nats.reader == "nats-bridge"
    assert nats.encoding == "binary" and nats.max_in_flight == 1024
    assert nats.duplicate_window == 120.0 and nats.consumer == "analyzer"


def test_every_nats_key_is_read():
    text = NATS + """servers = ["nats://a:4222", "tls://b:4443"]
stream = "MP"
subject_prefix = "md.raw"
credentials = "/etc/marketprism/nats.creds"
reader = "js"
encoding = "json"
max_in_flight = 64
ack_timeout = 2
commit_interval = 0.5
create_stream = false
duplicate_window = 600
max_age = 86400
max_bytes = 4096
replicas = 3
consumer = "analyzer-b"
enabled = false
"""
    nats = config.parse(text).instance("okx_spot").nats
    assert nats == config.NatsConfig(
        enabled=False, servers=("nats://a:4222", "tls://b:4443"), stream="MP",
        subject_prefix="md.raw", credentials="/etc/marketprism/nats.creds", reader="js",
        encoding="json", max_in_flight=64, ack_timeout=2, commit_interval=0.5,
        create_stream=False, duplicate_window=600, max_age=86400, max_bytes=4096, replicas=3,
        consumer="analyzer-b")


@pytest.mark.parametrize("body, key, problem", [
    ('colour = "red"', "colour", "unknown key"),
    ('servers = "nats://a:4222"', "servers", "expected list"),
    ("servers = []", "servers", "empty server list"),
    ('servers = ["http://a:4222"]', "servers", "not a nats:// or tls:// URL"),
    ('servers = [""]', "servers", "not a nats:// or tls:// URL"),
    ("servers = [4222]", "servers", "not a nats:// or tls:// URL"),
    ('stream = "a.b"', "stream", "not a JetStream name"),
    ('subject_prefix = "a.*"', "subject_prefix", "not NATS subject tokens"),
    ('subject_prefix = "a..b"', "subject_prefix", "not NATS subject tokens"),
    ('subject_prefix = ""', "subject_prefix", "not NATS subject tokens"),
    ('reader = "has space"', "reader", "reader names are"),
    ('reader = ""', "reader", "reader names are"),
    ('encoding = "msgpack"', "encoding", "must be one of binary, json"),
    ("max_in_flight = 0", "max_in_flight", "must be > 0"),
    ("max_in_flight = true", "max_in_flight", "expected int"),
    ("ack_timeout = -1", "ack_timeout", "must be > 0"),
    ('commit_interval = "1s"', "commit_interval", "expected number"),
    ("create_stream = 1", "create_stream", "expected bool"),
    ("duplicate_window = 0", "duplicate_window", "must be > 0"),
    ("replicas = 0", "replicas", "must be > 0"),
    ('consumer = "a b"', "consumer", "not a JetStream name"),
])
def test_a_bad_nats_value_names_its_key(body, key, problem):
    with pytest.raises(config.ConfigError) as err:
        config.parse(NATS + body + "\n", "/etc/mp.toml")
    assert err.value.key == f"instances.okx_spot.nats.{key}"
    assert problem in err.value.problem
    assert str(err.value).startswith("/etc/mp.toml: instances.okx_spot.nats.")


def test_nats_must_be_a_table():
    with pytest.raises(config.ConfigError) as err:
        config.parse(GOOD + 'nats = "nats://a:4222"\n')
    assert err.value.key == "instances.okx_spot.nats" and "expected dict" in err.value.problem


def test_two_instances_cannot_share_a_stream():
    text = NATS + 'stream = "MD"\n' + """
[instances.binance_spot]
exchange = "binance"
market = "spot"
symbols = ["BTC-USDT"]
[instances.binance_spot.nats]
stream = "MD"
"""
    with pytest.raises(config.ConfigError) as err:
        config.parse(text)
    assert err.value.key == "instances.binance_spot.nats.stream"
    assert "already used by okx_spot.nats.stream" in err.value.problem
