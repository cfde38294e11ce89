"""One daemon thread that runs model calls one at a time, so a torch model never runs two generates at once.

A call is queued as a `concurrent.futures.Future`; cancelling the future before the thread picks it up
(as `asyncio.wait_for` does on a timeout) skips the call. A call that is already running cannot be
stopped; it finishes in the background and the calls queued behind it wait. The thread is a daemon, so
a model that hangs never keeps the process from exiting.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class ModelWorker:
    """Serialises calls onto one thread, started on first use."""

    def __init__(self, name: str = "vlx-policy") -> None:
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Future, Callable[..., Any], tuple[Any, ...]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
        self._queue.put((future, fn, args))
        return future

    async def run(self, timeout_s: float, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on the worker thread; TimeoutError after `timeout_s` (queueing time included)."""
        return await asyncio.wait_for(asyncio.wrap_future(self.submit(fn, *args)), timeout_s)

    def _loop(self) -> None:
        while True:
            future, fn, args = self._queue.get()
            if not future.set_running_or_notify_cancel():  # cancelled while queued
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 — handed to the waiting request
                future.set_exception(exc)
            del future, fn, args  # drop references (images) before blocking on the queue
