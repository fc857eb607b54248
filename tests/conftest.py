"""Shared fixtures. Ring fixtures are prefixed ``ring_``."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture
def ring_name() -> Iterator[str]:
    """A ring name no other test uses; its segment is removed afterwards."""
    import shm

    name = f"test-{os.getpid()}-{uuid.uuid4().hex[:10]}"
    yield name
    try:
        shm.remove_ring(name, force=True)
    except shm.RingNotFound:
        pass
