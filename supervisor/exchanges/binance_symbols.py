"""Binance symbol ids <-> normalized symbols (one function pair, used by both markets).

Spot ``BTC-USDT`` and linear perpetual ``BTC-USDT-PERP`` are both ``BTCUSDT`` at Binance (the
instance says which market); dated USD-M contracts keep the venue id (``BTCUSDT_240628``).
Stream names use the lower-cased id (``btcusdt@depth@100ms``).
"""

from __future__ import annotations

# Quote assets, longest first, to split a venue id like "ETHBTC" when no config says how.
QUOTE_ASSETS = tuple(sorted((
    "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USDP", "DAI", "BTC", "ETH", "BNB", "EUR", "GBP",
    "TRY", "BRL", "AUD", "JPY", "RUB", "UAH", "BIDR", "IDRT", "ZAR", "PLN", "RON", "ARS",
    "MXN", "COP", "CZK", "NGN", "USD", "XRP", "DOGE", "TRX", "DOT", "PAX", "VAI",
), key=len, reverse=True))


def binance_symbol(std: str) -> str:
    """Normalized symbol -> Binance id: ``BTC-USDT`` and ``BTC-USDT-PERP`` -> ``BTCUSDT``.

    Ids without a dash (dated USD-M futures such as ``BTCUSDT_240628``) are venue ids
    already and pass through. Stream names use the lower-cased id.
    """
    parts = std.split("-")
    if len(parts) == 2 or (len(parts) == 3 and parts[2] == "PERP"):
        return parts[0] + parts[1]
    if len(parts) == 1:
        return std
    raise ValueError(f"not a Binance symbol: {std!r}")


def std_symbol(venue: str, market: str) -> str:
    """Binance id -> normalized symbol: ``BTCUSDT`` -> ``BTC-USDT`` (spot) or ``BTC-USDT-PERP``.

    Dated futures (``BTCUSDT_240628``) keep the venue id. The base/quote split uses
    :data:`QUOTE_ASSETS`; feeds map their configured symbols exactly instead.
    """
    venue = venue.upper()
    if "_" in venue:
        return venue
    for quote in QUOTE_ASSETS:
        if venue.endswith(quote) and len(venue) > len(quote):
            base = venue[: -len(quote)]
            return f"{base}-{quote}-PERP" if market == "derivatives" else f"{base}-{quote}"
    raise ValueError(f"unknown quote asset in {venue!r}")


__all__ = ["QUOTE_ASSETS", "binance_symbol", "std_symbol"]
