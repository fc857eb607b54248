"""The replay exchange: a local server speaking each venue's public WebSocket/REST protocol.

Offline peer of every adapter test, of ``make demo`` and of the soak and bench runs: it
serves recordings (:mod:`~supervisor.replay.playback`) or seeded synthetic markets
(:mod:`~supervisor.replay.market`) through Binance, OKX and Deribit's own protocols
(:mod:`~supervisor.replay.binance`, :mod:`~supervisor.replay.okx`,
:mod:`~supervisor.replay.deribit`), with faults on command
(:mod:`~supervisor.replay.faults`). Entry points: :class:`ReplayExchange` (async),
:class:`ReplayThread` / :class:`ReplayProcess` (sync tests, other processes) and the
``marketprism-replay`` command (:mod:`~supervisor.replay.main`).
"""

from supervisor.replay.faults import KINDS, VENUES, Fault
from supervisor.replay.harness import ReplayProcess, ReplayThread
from supervisor.replay.server import ReplayConfig, ReplayExchange

__all__ = ["KINDS", "VENUES", "Fault", "ReplayConfig", "ReplayExchange", "ReplayProcess",
           "ReplayThread"]
