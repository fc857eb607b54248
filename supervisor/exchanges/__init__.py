"""Venue adapters, one module per exchange; :func:`feed_class` picks one for an instance."""

from __future__ import annotations

from importlib import import_module

from supervisor.exchanges.base import Feed, FeedConfig, FeedStats

# (exchange, market) -> "module:class"; imported lazily so one venue's import cost or
# failure never touches another instance.
FEEDS: dict[tuple[str, str], str] = {
    ("binance", "spot"): "supervisor.exchanges.binance:BinanceSpotFeed",
    ("binance", "derivatives"): "supervisor.exchanges.binance:BinanceFuturesFeed",
    ("okx", "spot"): "supervisor.exchanges.okx:OkxFeed",
    ("okx", "derivatives"): "supervisor.exchanges.okx:OkxFeed",
    ("deribit", "derivatives"): "supervisor.exchanges.deribit:DeribitFeed",
}


def feed_class(exchange: str, market: str) -> type[Feed]:
    """The adapter class for ``exchange``/``market``; KeyError if there is none."""
    module, _, name = FEEDS[(exchange, market)].partition(":")
    return getattr(import_module(module), name)


__all__ = ["Feed", "FeedConfig", "FeedStats", "FEEDS", "feed_class"]
