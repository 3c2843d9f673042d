"""One object per process: made on first use, and made again in a forked child (gunicorn's
workers), never shared across a fork and never built at import time."""

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._pid = 0
        self._value: T | None = None

    def __call__(self) -> T:
        """This process's object (created now if this process has none yet)."""
        if self._pid == os.getpid():  # the hot path: no lock once made
            return self._value
        with self._lock:
            if self._pid != os.getpid():
                self._value, self._pid = self._factory(), os.getpid()
            return self._value

    def peek(self) -> T | None:
        """This process's object if it has been made, else None."""
        return self._value if self._pid == os.getpid() else None

    def clear(self) -> T | None:
        """Forget this process's object (the next call makes a new one) and return it."""
        with self._lock:
            value = self.peek()
            self._pid, self._value = 0, None
            return value
