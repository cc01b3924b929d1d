"""Writes that can wait a moment: collected in memory, written in batches by a background thread.

Each process starts its own thread on first use (so gunicorn workers forked after the app
was built get one) and flushes once more at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time

from flask import Flask

log = logging.getLogger(__name__)


class BackgroundBatcher:
    # What the log says when a flush fails, e.g. "record API key use".
    purpose = "write a batch"

    def __init__(self, app: Flask, interval: float) -> None:
        self._app = app
        self._interval = interval
        self._lock = threading.Lock()
        self._thread_pid: int | None = None
        # Tests turn this off and call `flush()` themselves.
        self.background = True

    def _ensure_thread(self) -> None:
        if self.background and self._thread_pid != os.getpid():
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread_pid == os.getpid():
                return
            self._thread_pid = os.getpid()
            thread = threading.Thread(target=self._run, name=f"gaia-{type(self).__name__}", daemon=True)
            thread.start()
            atexit.register(self._flush_logging_errors, final=True)

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            self._flush_logging_errors()

    def _flush_logging_errors(self, final: bool = False) -> None:
        try:
            self.flush()
        except Exception as exc:
            outcome = "lost at exit" if final else "kept for the next try"
            log.warning("could not %s (%s): %s", self.purpose, outcome, exc)

    def flush(self) -> int:
        raise NotImplementedError

    def discard_pending(self) -> None:
        """Forget what is waiting to be written (tests, between cases)."""
        with self._lock:
            self._pending.clear()
