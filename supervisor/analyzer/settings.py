"""``[instances.X.analyzer.settings]``: the analyzer's tunables, validated, with defaults.

Every bound a data-quality check uses lives here with its default and its unit, so the
table below is the documentation operators read. Unknown keys and wrong types are
configuration errors (exit 78), like everywhere else in the file.

==================== ========== ===================================================== =======
key                  unit       meaning                                               default
==================== ========== ===================================================== =======
source               -          ``auto`` (the ring if its segment exists, else        auto
                                ZeroMQ after ``ring_wait``), ``ring``, ``zmq`` or
                                ``jetstream`` (the instance's NATS stream, another host)
ring_wait            s          ``auto``: how long to wait for the ring to appear     10
wake_coalesce        s          ring: while records keep coming, sleep this long      0
                                before reading again rather than asking the writer
                                for a futex wake per record: less collector CPU, more
                                latency (0.0002 adds ~0.5 ms to the p99); 0 = off
ring_spin            s          ring: busy-poll this long for the next record before  0
                                sleeping on the futex: lower latency, and no futex
                                wake per record for the collector while records keep
                                coming; burns the CPU meanwhile; 0 = sleep at once
publish_interval     s          at most one result per symbol per interval            0.1
depth_levels         levels     N of the top-N depth imbalance                        5
windows              s (list)   rolling trade VWAP / volume windows                   1,10,60
vol_sample           s          mid sampling period for realized volatility           1
vol_window           s          realized volatility window                            300
change_window        s          funding / open-interest change horizon                300
liquidation_window   s          liquidation burst window                              10
liquidation_burst    count      liquidations within the window that make a burst      5
time_gap             s          quality: no update for a symbol for longer than this  60
stale_after          s          quality: symbol silent while the instance is not      300
clock_skew           s          quality: abs(receive - exchange time) above this      5
misalignment         s          quality: a symbol's exchange->receive offset differs  2
                                from the instance's median offset by more than this
jump_sigma           k          quality: return beyond k standard deviations          8
jump_min_samples     count      returns seen before the jump check arms               50
jump_min_move        fraction   returns smaller than this never count as jumps        0.002
jump_halflife        samples    half-life of the return variance estimate             200
log_interval         s          one log line per (check, symbol) per interval         10
snapshot_timeout     s          ZeroMQ mode: snapshot request retry period            2
plugin_timeout       s          plugin call this long: log its stack (0 = watchdog/2) 0
memory_soft_mb       MiB        RSS above this: log what the analyzer holds, count it 192
plugin_options       table      passed untouched to the plugin's ``setup``            {}
==================== ========== ===================================================== =======
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from supervisor.config import ConfigError


@dataclass(frozen=True)
class Settings:
    """Validated analyzer settings (see the module docstring for units and meaning)."""

    source: str = "auto"
    ring_wait: float = 10.0
    wake_coalesce: float = 0.0
    ring_spin: float = 0.0
    publish_interval: float = 0.1
    depth_levels: int = 5
    windows: tuple[float, ...] = (1.0, 10.0, 60.0)
    vol_sample: float = 1.0
    vol_window: float = 300.0
    change_window: float = 300.0
    liquidation_window: float = 10.0
    liquidation_burst: int = 5
    time_gap: float = 60.0
    stale_after: float = 300.0
    clock_skew: float = 5.0
    misalignment: float = 2.0
    jump_sigma: float = 8.0
    jump_min_samples: int = 50
    jump_min_move: float = 0.002
    jump_halflife: float = 200.0
    log_interval: float = 10.0
    snapshot_timeout: float = 2.0
    plugin_timeout: float = 0.0
    memory_soft_mb: int = 192  # below the unit's MemoryMax=256M
    plugin_options: Mapping[str, Any] = field(default_factory=dict)


_SOURCES = ("auto", "ring", "zmq", "jetstream")


def parse_settings(raw: Mapping[str, Any], path: str = "<config>",
                   prefix: str = "analyzer.settings") -> Settings:
    """Validate a settings table; raise :class:`ConfigError` naming the bad key."""
    known = [f.name for f in fields(Settings)]
    defaults = Settings()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}.{key}"
        if key not in known:
            raise ConfigError(path, name, f"unknown key (known: {', '.join(known)})")
        values[key] = _check(path, name, key, value, getattr(defaults, key))
    return Settings(**values)


def _check(path: str, name: str, key: str, value: Any, default: Any) -> Any:
    # bool is an int subclass: true/false is never a number here.
    if isinstance(value, bool):
        raise ConfigError(path, name, f"expected {type(default).__name__}, got bool")
    if key == "source":
        if value not in _SOURCES:
            raise ConfigError(path, name, f"must be one of {', '.join(_SOURCES)}; got {value!r}")
        return value
    if key == "plugin_options":
        if not isinstance(value, Mapping):
            raise ConfigError(path, name, f"expected table, got {type(value).__name__}")
        return dict(value)
    if key == "windows":
        if (not isinstance(value, list) or not value
                or not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0
                           for v in value)):
            raise ConfigError(path, name, f"expected a non-empty list of seconds > 0, got "
                              f"{value!r}")
        return tuple(sorted(float(v) for v in value))
    if isinstance(default, int):
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(path, name, f"expected an integer > 0, got {value!r}")
        return value
    if not isinstance(value, int | float):
        raise ConfigError(path, name, f"expected number, got {type(value).__name__} {value!r}")
    if key in ("plugin_timeout", "ring_wait", "wake_coalesce", "ring_spin"):
        if value < 0:
            raise ConfigError(path, name, f"must be >= 0, got {value!r}")
    elif value <= 0:
        raise ConfigError(path, name, f"must be > 0, got {value!r}")
    return float(value)


__all__ = ["Settings", "parse_settings"]
