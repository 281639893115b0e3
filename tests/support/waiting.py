"""Waiting for a condition instead of sleeping a fixed time."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, step: float = 0.05) -> bool:
    """True as soon as `predicate()` is truthy; False if it is still not after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())


def wait_for_sync(predicate: Callable[[], Any], timeout: float = 5.0, step: float = 0.05) -> bool:
    """`wait_for` for code outside an event loop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
