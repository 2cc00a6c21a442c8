"""Logging set-up: text for people, JSON lines for clusters.

Every module logs through its own `logging.getLogger(__name__)`; lines
about one IKE SA go through an `SaLogger` that prefixes the connection and
the SA's unique id and, in JSON, adds them as fields.

While the daemon runs (`defer_flushes`), INFO and DEBUG lines wait in the
stream's buffer until `flush` (the daemon calls it a few times a second,
and when it stops) or until a WARNING or worse comes, which goes out at
once with everything before it, as strongSwan's file logger buffers its
lines: a file system write per IKE SA event costs more than the line.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_FIELDS = ("connection", "ike_sa")
_SYSLOG = "/dev/log"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and SA fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: message`; the date and time to the second are
    formatted once per second, not once per line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        cached, text = self._second
        if cached != second:
            text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
            self._second = (second, text)
        return f"{text},{int(record.msecs):03d}"


class _DeferredFlush(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that can leave INFO and DEBUG lines in the buffer."""

    deferred = False

    def flush(self) -> None:
        if not self.deferred:
            super().flush()

    def flush_now(self) -> None:
        super().flush()

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if self.deferred and record.levelno >= logging.WARNING:
            self.flush_now()


class _StreamHandler(_DeferredFlush):
    pass


class _FileHandler(_DeferredFlush, logging.FileHandler):
    pass


class SaLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes `[connection|#id]` to every line about one IKE SA."""

    def __init__(self, logger: logging.Logger, connection: str, ike_sa: int) -> None:
        super().__init__(logger, {"connection": connection, "ike_sa": ike_sa})

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"[{extra['connection']}|#{extra['ike_sa']}] {msg}", kwargs


def configure(
    level: str, fmt: str, file: Path | None = None, *, detached: bool = False
) -> None:
    """Log at `level` in `fmt` (text | json) to `file`, else to stderr, or
    to syslog when detached from the terminal."""
    handler = _handler(file, detached)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(level)
    _skip_unused_record_fields()


def _skip_unused_record_fields() -> None:
    """Neither format shows threads, processes or source lines: spare each
    record looking them up (the logging HOWTO's "Optimization" switches)."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None


def _handler(file: Path | None, detached: bool) -> logging.Handler:
    if file is not None:
        return _FileHandler(file, encoding="utf-8")
    if detached and Path(_SYSLOG).exists():
        return logging.handlers.SysLogHandler(_SYSLOG)
    if detached:
        return logging.NullHandler()
    return _StreamHandler(sys.stderr)


def _buffering() -> list[_DeferredFlush]:
    return [h for h in logging.getLogger().handlers if isinstance(h, _DeferredFlush)]


def defer_flushes(enabled: bool) -> None:
    """Let INFO and DEBUG lines wait for `flush` (or stop letting them)."""
    for handler in _buffering():
        if not enabled:
            handler.flush_now()
        handler.deferred = enabled


def flush() -> None:
    """Write out the lines waiting in the buffers."""
    for handler in _buffering():
        handler.flush_now()


def set_level(level: str) -> None:
    """`level` for qsgw's own loggers; libraries stay at INFO or above, so
    that `debug` shows qsgw's messages, not pyroute2's netlink traffic."""
    value = _LEVELS.get(level, logging.INFO)
    logging.getLogger("qsgw").setLevel(value)
    logging.getLogger().setLevel(max(value, logging.INFO))
