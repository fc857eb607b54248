"""The one configuration file, ``/etc/marketprism/marketprism.toml``, loaded and validated.

Every section and key is declared below with its type and default; anything else is an
error. A bad file raises :class:`ConfigError` naming the file, the key and what is wrong;
services turn it into exit status 78 (EX_CONFIG), which the units list in
``RestartPreventExitStatus=`` so systemd does not restart-loop on a typo.

The path comes from ``--config``, else ``$MARKETPRISM_CONFIG``, else the default.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from supervisor.exchanges.base import CHANNELS, FeedConfig

DEFAULT_PATH = "/etc/marketprism/marketprism.toml"
ENV_PATH = "MARKETPRISM_CONFIG"
EX_CONFIG = 78

# Per-instance memory soft/hard limits in MB (the plan this replaces).
MEMORY_DEFAULTS: dict[str, tuple[int, int]] = {
    "okx_derivatives": (150, 200),
    "okx_spot": (120, 160),
    "binance_derivatives": (100, 140),
    "binance_spot": (80, 120),
    "deribit_derivatives": (60, 100),
}
# Data types each (exchange, market) can collect.
SUPPORTED: dict[tuple[str, str], frozenset[str]] = {
    ("okx", "spot"): frozenset({"books", "trades"}),
    ("okx", "derivatives"): frozenset(CHANNELS) - {"volatility_index"},
    ("binance", "spot"): frozenset({"books", "trades"}),
    ("binance", "derivatives"): frozenset(CHANNELS) - {"volatility_index"},
    ("deribit", "derivatives"): frozenset({"books", "trades", "volatility_index", "funding",
                                           "open_interest"}),
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,31}$")
_SYMBOL = re.compile(r"^[A-Z0-9]+(-[A-Z0-9]+)*$")


class ConfigError(Exception):
    """The configuration is invalid; ``str()`` is the one line an operator needs."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        super().__init__(f"{path}: {key}: {problem}")
        self.path = path
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class InstanceConfig:
    """One collector instance (exchange x market) and what hangs off it."""

    name: str
    exchange: str
    market: str
    symbols: tuple[str, ...]
    channels: frozenset[str]
    ws_url: str
    rest_url: str
    ring: str  # shared-memory ring name (/dev/shm/marketprism.<ring>)
    ring_capacity: int  # bytes, power of two
    zmq_pub: str  # ZeroMQ PUB endpoint (topic instance/type/symbol)
    zmq_snapshot: str  # ZeroMQ ROUTER endpoint of the book snapshot service
    memory_soft_mb: int  # warn and count above this RSS
    memory_hard_mb: int  # systemd MemoryMax= (the kernel enforces it)
    enabled: bool
    book_depth: int
    silence_timeout: float
    rest_poll_interval: float
    max_loop_lag: float  # seconds; above it the watchdog is not fed
    stale_after: float  # seconds without data before the watchdog is starved
    analyzer: AnalyzerConfig
    nats: NatsConfig | None = None  # the JetStream sink; None: no [instances.X.nats] table

    def feed_config(self) -> FeedConfig:
        return FeedConfig(
            instance=self.name, exchange=self.exchange, market=self.market,
            symbols=self.symbols, channels=self.channels, ws_url=self.ws_url,
            rest_url=self.rest_url, book_depth=self.book_depth,
            rest_poll_interval=self.rest_poll_interval, silence_timeout=self.silence_timeout,
        )


@dataclass(frozen=True)
class AnalyzerConfig:
    enabled: bool = True
    reader: str = "analyzer"  # durable ring reader name
    zmq_pub: str = ""  # analysis results PUB endpoint ("" = none)
    plugin: str = ""  # "package.module:function" or a path to a .py file with analyze()
    batch: int = 512  # max events per batch
    settings: Mapping[str, Any] = field(default_factory=dict)  # quality-check bounds etc.


@dataclass(frozen=True)
class NatsConfig:
    """``[instances.X.nats]``: the optional JetStream sink (``nats-bridge@X``)."""

    enabled: bool = True
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    stream: str = ""  # JetStream stream name; "" = "marketprism_<instance>"
    subject_prefix: str = "marketprism"  # subjects <prefix>.<instance>.<type>.<symbol>
    credentials: str = ""  # NATS .creds file ("" = no authentication)
    reader: str = "nats-bridge"  # durable ring reader name
    encoding: str = "binary"  # "binary" (the ring record) or "json" (the ZeroMQ document)
    max_in_flight: int = 1024  # publishes awaiting their ack
    ack_timeout: float = 5.0  # seconds before an unacked publish counts as failed
    commit_interval: float = 1.0  # seconds between ring commits under sustained load
    create_stream: bool = True  # create the stream when it does not exist
    duplicate_window: float = 120.0  # seconds (stream setting, used when creating it)
    max_age: float = 3600.0  # seconds (stream setting, used when creating it)
    max_bytes: int = 1 << 30  # stream setting, used when creating it
    replicas: int = 1  # stream setting, used when creating it
    consumer: str = "analyzer"  # durable consumer of an analyzer reading JetStream


@dataclass(frozen=True)
class AggregatorConfig:
    listen: str = "127.0.0.1"
    health_port: int = 8087
    metrics_port: int = 9092
    textfile: str = "/var/lib/prometheus/node-exporter/marketprism.prom"
    interval: float = 5.0  # seconds between stats refreshes


@dataclass(frozen=True)
class ServiceConfig:
    log_level: str = "info"
    state_dir: str = "/var/lib/marketprism"


@dataclass(frozen=True)
class Config:
    path: str
    service: ServiceConfig
    aggregator: AggregatorConfig
    instances: dict[str, InstanceConfig]

    def instance(self, name: str) -> InstanceConfig:
        try:
            return self.instances[name]
        except KeyError:
            known = ", ".join(sorted(self.instances)) or "none"
            raise ConfigError(self.path, f"instances.{name}",
                              f"unknown instance (configured: {known})") from None


# ----- validators ---------------------------------------------------------------------------
Check = Callable[[Any], str | None]  # returns a problem or None


def _url(*schemes: str) -> Check:
    def check(v: str) -> str | None:
        if v == "":
            return None
        parts = urlsplit(v)
        if parts.scheme not in schemes or not parts.hostname:
            return f"not a {'/'.join(schemes)} URL: {v!r}"
        return None
    return check


def _zmq(v: str) -> str | None:
    if v == "" or re.match(r"^(tcp://[^:/]+:\d{1,5}|ipc://.+|inproc://.+)$", v):
        return None
    return f"not a ZeroMQ endpoint (tcp://host:port or ipc://path): {v!r}"


def _positive(v: float) -> str | None:
    return None if v > 0 else f"must be > 0, got {v!r}"


def _pow2(v: int) -> str | None:
    if v >= 4096 and v & (v - 1) == 0:
        return None
    return f"must be a power of two >= 4096, got {v!r}"


def _port(v: int) -> str | None:
    return None if 0 < v < 65536 else f"not a TCP port: {v!r}"


def _nats_urls(v: list[Any]) -> str | None:
    if not v:
        return "empty server list"
    for url in v:
        if not isinstance(url, str) or _url("nats", "tls")(url) or not url:
            return f"not a nats:// or tls:// URL: {url!r}"
    return None


def _subject_tokens(v: str) -> str | None:
    if re.match(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$", v):
        return None
    return f"not NATS subject tokens ([A-Za-z0-9_-] separated by dots): {v!r}"


def _stream_name(v: str) -> str | None:
    if v == "" or re.match(r"^[A-Za-z0-9_-]{1,64}$", v):
        return None
    return f"not a JetStream name ([A-Za-z0-9_-], at most 64 characters): {v!r}"


def _one_of(*values: str) -> Check:
    def check(v: str) -> str | None:
        return None if v in values else f"must be one of {', '.join(values)}; got {v!r}"
    return check


# key -> (type, default, check). A default of None means required; ABSENT, optional table.
ABSENT: Any = object()
_INSTANCE_KEYS: dict[str, tuple[type | tuple[type, ...], Any, Check | None]] = {
    "exchange": (str, None, _one_of("okx", "binance", "deribit")),
    "market": (str, None, _one_of("spot", "derivatives")),
    "symbols": (list, None, None),
    "channels": (list, ["books", "trades"], None),
    "ws_url": (str, "", _url("ws", "wss")),
    "rest_url": (str, "", _url("http", "https")),
    "ring": (str, "", None),
    "ring_capacity": (int, 1 << 24, _pow2),
    "zmq_pub": (str, "", _zmq),
    "zmq_snapshot": (str, "", _zmq),
    "memory_soft_mb": (int, 0, None),
    "memory_hard_mb": (int, 0, None),
    "enabled": (bool, True, None),
    "book_depth": (int, 1000, _positive),
    "silence_timeout": ((int, float), 30.0, _positive),
    "rest_poll_interval": ((int, float), 60.0, _positive),
    "max_loop_lag": ((int, float), 1.0, _positive),
    "stale_after": ((int, float), 60.0, _positive),
    "analyzer": (dict, {}, None),
    "nats": (dict, ABSENT, None),  # optional: no table, no sink
}
_ANALYZER_KEYS: dict[str, tuple[type | tuple[type, ...], Any, Check | None]] = {
    "enabled": (bool, True, None),
    "reader": (str, "analyzer", None),
    "zmq_pub": (str, "", _zmq),
    "plugin": (str, "", None),
    "batch": (int, 512, _positive),
    "settings": (dict, {}, None),
}
_NATS_KEYS: dict[str, tuple[type | tuple[type, ...], Any, Check | None]] = {
    "enabled": (bool, True, None),
    "servers": (list, list(NatsConfig.servers), _nats_urls),
    "stream": (str, "", _stream_name),
    "subject_prefix": (str, "marketprism", _subject_tokens),
    "credentials": (str, "", None),
    "reader": (str, "nats-bridge", None),
    "encoding": (str, "binary", _one_of("binary", "json")),
    "max_in_flight": (int, 1024, _positive),
    "ack_timeout": ((int, float), 5.0, _positive),
    "commit_interval": ((int, float), 1.0, _positive),
    "create_stream": (bool, True, None),
    "duplicate_window": ((int, float), 120.0, _positive),
    "max_age": ((int, float), 3600.0, _positive),
    "max_bytes": (int, 1 << 30, _positive),
    "replicas": (int, 1, _positive),
    "consumer": (str, "analyzer", _stream_name),
}
_AGGREGATOR_KEYS: dict[str, tuple[type | tuple[type, ...], Any, Check | None]] = {
    "listen": (str, "127.0.0.1", None),
    "health_port": (int, 8087, _port),
    "metrics_port": (int, 9092, _port),
    "textfile": (str, AggregatorConfig.textfile, None),
    "interval": ((int, float), 5.0, _positive),
}
_SERVICE_KEYS: dict[str, tuple[type | tuple[type, ...], Any, Check | None]] = {
    "log_level": (str, "info", _one_of("debug", "info", "notice", "warning", "error")),
    "state_dir": (str, ServiceConfig.state_dir, None),
}
_TOP_KEYS = ("service", "aggregator", "instances")


def _section(path: str, prefix: str, raw: Any,
             keys: dict[str, tuple[type | tuple[type, ...], Any, Check | None]]
             ) -> dict[str, Any]:
    """Type-check one table against its declared keys; fill defaults."""
    if not isinstance(raw, dict):
        raise ConfigError(path, prefix, f"must be a table, got {type(raw).__name__}")
    for key in raw:
        if key not in keys:
            raise ConfigError(path, f"{prefix}.{key}",
                              f"unknown key (known: {', '.join(keys)})")
    out: dict[str, Any] = {}
    for key, (typ, default, check) in keys.items():
        name = f"{prefix}.{key}"
        if key not in raw:
            if default is None:
                raise ConfigError(path, name, "required key is missing")
            out[key] = default
            continue
        value = raw[key]
        # bool is an int subclass: reject true/false where a number is expected.
        if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
            want = typ.__name__ if isinstance(typ, type) else "number"
            raise ConfigError(path, name, f"expected {want}, got {type(value).__name__} "
                              f"{value!r}")
        if check is not None and (problem := check(value)):
            raise ConfigError(path, name, problem)
        out[key] = value
    return out


def _instance(path: str, name: str, raw: Any) -> InstanceConfig:
    prefix = f"instances.{name}"
    if not _NAME.match(name):
        raise ConfigError(path, prefix, "instance names are [a-z0-9_], at most 32 characters")
    v = _section(path, prefix, raw, _INSTANCE_KEYS)
    venue = (v["exchange"], v["market"])
    if venue not in SUPPORTED:
        raise ConfigError(path, f"{prefix}.market",
                          f"{v['exchange']} has no {v['market']} market here")
    symbols = v["symbols"]
    if not symbols:
        raise ConfigError(path, f"{prefix}.symbols", "empty symbol list")
    for s in symbols:
        if not isinstance(s, str) or not _SYMBOL.match(s):
            raise ConfigError(path, f"{prefix}.symbols",
                              f"not a normalized symbol (e.g. BTC-USDT, BTC-USDT-PERP): {s!r}")
    if len(set(symbols)) != len(symbols):
        raise ConfigError(path, f"{prefix}.symbols", "duplicate symbols")
    channels = v["channels"]
    for c in channels:
        if c not in SUPPORTED[venue]:
            raise ConfigError(path, f"{prefix}.channels",
                              f"{c!r} is not available on {venue[0]} {venue[1]} "
                              f"(available: {', '.join(sorted(SUPPORTED[venue]))})")
    soft, hard = MEMORY_DEFAULTS.get(name, (100, 150))
    soft = v["memory_soft_mb"] or soft
    hard = v["memory_hard_mb"] or hard
    if not 0 < soft < hard:
        raise ConfigError(path, f"{prefix}.memory_soft_mb",
                          f"need 0 < memory_soft_mb ({soft}) < memory_hard_mb ({hard})")
    ring = v["ring"] or name
    if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", ring):
        raise ConfigError(path, f"{prefix}.ring", f"bad ring name {ring!r}")
    an = _section(path, f"{prefix}.analyzer", v["analyzer"], _ANALYZER_KEYS)
    nats = None
    if v["nats"] is not ABSENT:
        nv = _section(path, f"{prefix}.nats", v["nats"], _NATS_KEYS)
        if not re.match(r"^[A-Za-z0-9_.-]{1,31}$", nv["reader"]):
            raise ConfigError(path, f"{prefix}.nats.reader",
                              "reader names are 1-31 characters of [A-Za-z0-9_.-]")
        nats = NatsConfig(**{**nv, "servers": tuple(nv["servers"]),
                             "stream": nv["stream"] or f"marketprism_{name}"})
    return InstanceConfig(
        name=name, exchange=v["exchange"], market=v["market"], symbols=tuple(symbols),
        channels=frozenset(channels), ws_url=v["ws_url"], rest_url=v["rest_url"], ring=ring,
        ring_capacity=v["ring_capacity"], zmq_pub=v["zmq_pub"],
        zmq_snapshot=v["zmq_snapshot"], memory_soft_mb=soft, memory_hard_mb=hard,
        enabled=v["enabled"], book_depth=v["book_depth"],
        silence_timeout=float(v["silence_timeout"]),
        rest_poll_interval=float(v["rest_poll_interval"]),
        max_loop_lag=float(v["max_loop_lag"]), stale_after=float(v["stale_after"]),
        analyzer=AnalyzerConfig(**an), nats=nats,
    )


def parse(text: str, path: str = "<string>") -> Config:
    """Validate TOML text; raise :class:`ConfigError` on the first problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "(syntax)", str(exc)) from None
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(path, key, f"unknown section (known: {', '.join(_TOP_KEYS)})")
    service = ServiceConfig(**_section(path, "service", raw.get("service", {}), _SERVICE_KEYS))
    aggregator = AggregatorConfig(**_section(path, "aggregator", raw.get("aggregator", {}),
                                             _AGGREGATOR_KEYS))
    instances_raw = raw.get("instances", {})
    if not isinstance(instances_raw, dict) or not instances_raw:
        raise ConfigError(path, "instances", "no instances configured")
    instances = {name: _instance(path, name, body) for name, body in instances_raw.items()}
    _check_unique(path, instances)
    return Config(path, service, aggregator, instances)


def _check_unique(path: str, instances: dict[str, InstanceConfig]) -> None:
    """Rings and ZeroMQ endpoints belong to one instance each."""
    seen: dict[tuple[str, str], str] = {}
    for inst in instances.values():
        for key, space, value in (("ring", "ring", inst.ring),
                                  ("zmq_pub", "zmq", inst.zmq_pub),
                                  ("zmq_snapshot", "zmq", inst.zmq_snapshot),
                                  ("analyzer.zmq_pub", "zmq", inst.analyzer.zmq_pub),
                                  ("nats.stream", "stream",
                                   inst.nats.stream if inst.nats else "")):
            if not value:
                continue
            owner = seen.setdefault((space, value), f"{inst.name}.{key}")
            if owner != f"{inst.name}.{key}":
                raise ConfigError(path, f"instances.{inst.name}.{key}",
                                  f"{value!r} is already used by {owner}")


def resolve_path(explicit: str | None = None) -> str:
    return explicit or os.environ.get(ENV_PATH) or DEFAULT_PATH


def load(path: str | None = None) -> Config:
    """Read and validate the configuration file."""
    path = resolve_path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(path, "(file)", f"cannot read: {exc.strerror}") from None
    return parse(text, path)


def load_or_report(path: str | None = None, prog: str = "marketprism") -> Config | None:
    """:func:`load` for commands: on error print the one-line reason, return None (exit 78)."""
    try:
        return load(path)
    except ConfigError as exc:
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        return None


__all__ = ["Config", "ConfigError", "InstanceConfig", "AnalyzerConfig", "NatsConfig",
           "AggregatorConfig",
           "ServiceConfig", "load", "load_or_report", "parse", "resolve_path", "EX_CONFIG",
           "DEFAULT_PATH"]
