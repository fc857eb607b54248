"""Example plug-in: taker-flow imbalance per symbol, with thresholds from a "model" file.

For each batch it sums buy and sell taker volume per symbol and publishes a result when the
flow is one-sided enough: ``(buy - sell) / (buy + sell)`` beyond the model's threshold. The
"model" is a small JSON file loaded once in :func:`setup` (standing in for an ONNX model):
when it cannot be loaded, setup raises and the analyzer runs degraded without this plug-in.

Configuration::

    [instances.binance_spot.analyzer]
    plugin = "supervisor.analyzer.example_plugin:analyze"
    zmq_pub = "tcp://127.0.0.1:5571"
    [instances.binance_spot.analyzer.settings.plugin_options]
    model = "/etc/marketprism/flow-model.json"   # {"threshold": 0.6, "min_trades": 5}

Output is a pure function of each batch, so there is nothing to roll back in ``on_start``;
results carry ``ring_seq`` so subscribers can drop duplicates after a restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from supervisor.analyzer.plugins import PluginBatch, PluginContext
from supervisor.events import Trade

KINDS = {"trade"}  # decode only trades for this plug-in

_model: dict[str, float] = {"threshold": 0.6, "min_trades": 5}


def setup(ctx: PluginContext) -> None:
    """Load the thresholds (a missing or malformed file raises: the analyzer degrades)."""
    path = ctx.options.get("model")
    if path:
        from supervisor import jsonlib

        with open(path, "rb") as fh:
            model = jsonlib.loads(fh.read())
        _model["threshold"] = float(model["threshold"])
        _model["min_trades"] = int(model.get("min_trades", 5))
    ctx.log.info("flow model: threshold %.2f, min %d trades", _model["threshold"],
                 _model["min_trades"])


def on_start(last_committed_seq: int | None) -> None:
    """Stateless output: nothing written after the last commit needs undoing."""


def analyze(batch: PluginBatch) -> Iterator[dict[str, Any]]:
    flow: dict[str, list[float]] = {}
    for event, seq in zip(batch.events, batch.seqs, strict=True):
        if type(event) is not Trade:
            continue
        acc = flow.setdefault(event.symbol, [0.0, 0.0, 0.0, 0])
        size = float(event.size)
        acc[0 if event.side == "buy" else 1] += size
        acc[2] = seq
        acc[3] += 1
    for symbol, (buy, sell, seq, n) in flow.items():
        if n >= _model["min_trades"] and buy + sell > 0:
            imbalance = (buy - sell) / (buy + sell)
            if abs(imbalance) >= _model["threshold"]:
                yield {"symbol": symbol, "flow_imbalance": imbalance, "trades": n,
                       "buy_volume": buy, "sell_volume": sell, "ring_seq": int(seq)}
