"""``make soak``: the whole system under systemd at high rate, under seeded random faults.

Modules: :mod:`soak.run` (the run, ``python -m soak``), :mod:`soak.plan` (the seeded fault
schedule), :mod:`soak.inject` (applies it), :mod:`soak.probe` (samples processes, stats
blocks and rings inside the lab container), :mod:`soak.plugin` (the analyzer plug-in that
journals every ring seq), :mod:`soak.ledger` (loss and gap accounting from the journals),
:mod:`soak.figures` (totals across process restarts, growth, latency percentiles) and
:mod:`soak.report` (the invariants and the report). See soak/RESULTS.md for a real run.
"""
