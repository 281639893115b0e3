"""Waiting for a condition instead of sleeping a fixed time."""
from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, step: float = 0.05) -> bool:
    """True as soon as `predicate()` is truthy (awaited, if it returns an awaitable); False if it is still
    not after `timeout` seconds."""
    async def check() -> bool:
        result = predicate()
        return bool(await result if inspect.isawaitable(result) else result)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(step)
    return await check()


def wait_for_sync(predicate: Callable[[], Any], timeout: float = 5.0, step: float = 0.05) -> bool:
    """`wait_for` for code outside an event loop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
