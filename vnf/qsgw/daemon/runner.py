"""`qsgw run`: load the configuration, pick the data plane, serve.

In the foreground (the default, as containers and service managers want it)
the daemon logs to stderr and stops on SIGTERM/SIGINT. With `--detach` it
leaves the terminal (double fork, new session) and the command returns only
once the daemon has opened its sockets, with its answer: started, or the
reason it could not start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import sys
from pathlib import Path

from qsgw.daemon import logs
from qsgw.daemon.config import GatewayConfig, load_config
from qsgw.daemon.dataplane import DataPlaneUnavailable, UdpSender, create_backend
from qsgw.daemon.server import Gateway

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
_START_TIMEOUT = 30.0


def run(config_path: Path, socket: Path | None, *, foreground: bool) -> int:
    config = load_config(config_path)  # a ConfigError is reported by the CLI
    if socket is not None:
        gateway = config.gateway.model_copy(update={"control_socket": socket})
        config = GatewayConfig(config.source, gateway, config.connections)
    if foreground:
        _configure_logging(config, detached=False)
        return _serve(config, report=None)
    return _detach(config)


def _configure_logging(config: GatewayConfig, *, detached: bool) -> None:
    log = config.gateway.log
    logs.configure(log.level, log.format, log.file, detached=detached)


def _serve(config: GatewayConfig, report: int | None) -> int:
    """Run the gateway; `report` is a pipe to tell the parent the outcome."""
    try:
        sender = UdpSender()
        backend = create_backend(config.gateway.data_plane, sender)
        gateway = Gateway(config, backend, esp_sender=sender)
    except DataPlaneUnavailable as exc:
        return _start_failed(str(exc), report)

    started = False

    def ready() -> None:
        nonlocal started
        started = True
        if report is not None:
            _tell(report, f"ok {os.getpid()}")

    try:
        asyncio.run(gateway.run(ready=ready))
    except Exception as exc:
        if started:
            raise
        return _start_failed(str(exc), report)
    return EXIT_OK


def _start_failed(reason: str, report: int | None) -> int:
    logger.error("cannot start: %s", reason)
    if report is not None:
        _tell(report, reason)
    else:
        print(f"qsgw: cannot start: {reason}", file=sys.stderr)
    return EXIT_FAILED


def _tell(report: int, message: str) -> None:
    try:
        os.write(report, message.encode() + b"\n")
        os.close(report)
    except OSError:
        pass


def _detach(config: GatewayConfig) -> int:
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        return _await_start(read_end)
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    _redirect_stdio()
    _configure_logging(config, detached=True)
    os._exit(_serve(config, report=write_end))


def _redirect_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _await_start(read_end: int) -> int:
    readable, _, _ = select.select([read_end], [], [], _START_TIMEOUT)
    answer = (
        os.read(read_end, 4096).decode(errors="replace").strip() if readable else ""
    )
    os.close(read_end)
    if answer.startswith("ok "):
        print(f"qsgw started, pid {answer[3:]}")
        return EXIT_OK
    reason = answer or "the daemon did not report in time"
    print(f"qsgw: cannot start: {reason}", file=sys.stderr)
    return EXIT_FAILED
