"""Undo everything the demo created, in reverse order, whatever happens.

Each resource is registered with the action that removes it as soon as it
exists; `Cleanup.close()` runs the actions newest first, keeps going past a
failing one and reports what it could not remove. SIGTERM and SIGHUP are
turned into `Interrupted` so that `kill` cleans up as Ctrl-C does, and
signals are ignored while the cleanup itself runs.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

logger = logging.getLogger(__name__)

Action = Callable[[], None]
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(Exception):
    """The demo was asked to stop (Ctrl-C, SIGTERM, SIGHUP)."""


class Cleanup:
    """A stack of undo actions, each with a short description."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Action]] = []
        self.failures: list[str] = []

    def push(self, what: str, action: Action) -> None:
        self._actions.append((what, action))

    def close(self) -> list[str]:
        """Run every action, newest first; the descriptions of those that
        failed (an action that fails is not retried)."""
        with _signals_ignored():
            while self._actions:
                what, action = self._actions.pop()
                self._run(what, action)
        return self.failures

    def _run(self, what: str, action: Action) -> None:
        try:
            action()
        except Exception as exc:
            logger.debug("cleanup of %s failed: %s", what, exc)
            self.failures.append(f"{what}: {exc}")


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    del frame
    raise Interrupted(f"stopped by {signal.Signals(signum).name}")


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM and SIGHUP raise `Interrupted` inside the block (SIGINT
    already raises KeyboardInterrupt)."""
    previous = {
        signum: signal.signal(signum, _raise_interrupted)
        for signum in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def _signals_ignored() -> Iterator[None]:
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in _SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
