"""The control socket: line-delimited JSON over a unix socket (mode 0600).

A request is one line `{"command": "sas", "args": {...}}`; the answer is
one line, `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`.
A client may send several requests on one connection. `request()` is the
synchronous client the CLI uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from qsgw.daemon.server import Gateway

logger = logging.getLogger(__name__)

DEFAULT_SOCKET = Path("/run/qsgw/qsgw.sock")
MAX_REQUEST = 64 * 1024
DEFAULT_WAIT = 10.0


class CommandError(Exception):
    """A command that could not be carried out; the message is for the user."""


class DaemonUnreachable(Exception):
    """No daemon answers on the control socket."""


# --- the server side -------------------------------------------------------------


Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class Commands:
    """The commands the control socket understands, bound to a gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._handlers: dict[str, Handler] = {
            "initiate": self._initiate,
            "terminate": self._terminate,
            "rekey": self._rekey,
            "reload": self._reload,
            "sas": self._sas,
            "conns": self._conns,
            "status": self._status,
        }

    async def run(self, command: str, args: dict[str, Any]) -> Any:
        handler = self._handlers.get(command)
        if handler is None:
            raise CommandError(f"unknown command '{command}'")
        return await handler(args)

    async def _initiate(self, args: dict[str, Any]) -> Any:
        connection = _text(args, "conn")
        child = _optional_text(args, "child")
        return await self._gateway.initiate(connection, child, _wait(args))

    async def _terminate(self, args: dict[str, Any]) -> Any:
        if "ike" in args:
            return await self._gateway.terminate_ike(_number(args, "ike"), _wait(args))
        connection = _text(args, "conn")
        return await self._gateway.terminate_connection(connection, _wait(args))

    async def _rekey(self, args: dict[str, Any]) -> Any:
        if "ike" in args:
            return self._gateway.rekey_ike(_number(args, "ike"))
        return self._gateway.rekey_child(_number(args, "child"))

    async def _reload(self, args: dict[str, Any]) -> Any:
        return self._gateway.reload()

    async def _sas(self, args: dict[str, Any]) -> Any:
        return self._gateway.sas()

    async def _conns(self, args: dict[str, Any]) -> Any:
        return self._gateway.conns()

    async def _status(self, args: dict[str, Any]) -> Any:
        return self._gateway.status()


def _text(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise CommandError(f"'{name}' must be a non-empty string")
    return value


def _optional_text(args: dict[str, Any], name: str) -> str | None:
    return None if args.get(name) is None else _text(args, name)


def _number(args: dict[str, Any], name: str) -> int:
    value = args.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CommandError(f"'{name}' must be an integer")
    return value


def _wait(args: dict[str, Any]) -> float:
    value = args.get("wait", DEFAULT_WAIT)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CommandError("'wait' must be a number of seconds")
    return float(value)


async def serve(commands: Commands, path: Path) -> asyncio.Server:
    """Listen on `path`, readable and writable by the owner only."""
    sock = _bind(path)
    loop = asyncio.get_running_loop()
    return await loop.create_unix_server(lambda: _Connection(commands), sock=sock)


class _Connection(asyncio.Protocol):
    """One client: its request lines answered one after the other, in order.

    A plain protocol rather than asyncio streams: no reader task waiting
    on every line, one task only while requests are being answered. A
    line longer than MAX_REQUEST closes the connection without an answer.
    """

    def __init__(self, commands: Commands) -> None:
        self._commands = commands
        self._transport: asyncio.Transport | None = None
        self._partial = bytearray()
        self._lines: deque[bytes] = deque()
        self._answering: asyncio.Task[None] | None = None
        self._eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._partial += data
        end = self._partial.rfind(b"\n") + 1
        if end:
            self._lines.extend(bytes(self._partial[: end - 1]).split(b"\n"))
            del self._partial[:end]
        if len(self._partial) > MAX_REQUEST or any(
            len(line) > MAX_REQUEST for line in self._lines
        ):
            self._close()
            return
        self._answer_lines()

    def eof_received(self) -> bool:
        self._eof = True
        if self._partial:  # a last request without its newline
            self._lines.append(bytes(self._partial))
            self._partial.clear()
        self._answer_lines()
        return True  # half-closed: the answers may still go out

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def _answer_lines(self) -> None:
        if self._answering is None and self._lines:
            self._answering = asyncio.get_running_loop().create_task(self._answer())
        elif self._answering is None and self._eof:
            self._close()

    async def _answer(self) -> None:
        while self._lines and self._transport is not None:
            answer = await _answer(self._commands, self._lines.popleft())
            if self._transport is None or self._transport.is_closing():
                break
            self._transport.write(json.dumps(answer).encode() + b"\n")
        self._answering = None
        if self._eof or self._transport is None:
            self._close()

    def _close(self) -> None:
        self._lines.clear()
        if self._transport is not None:
            self._transport.close()


def _bind(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if path.exists() or path.is_symlink():
        if _alive(path):
            raise OSError(f"another daemon is listening on {path}")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_mask = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_mask)
    os.chmod(path, 0o600)
    return sock


def _alive(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def remove_socket(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def _answer(commands: Commands, line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            raise CommandError("a request is an object with a 'command' string")
        args = request.get("args") or {}
        if not isinstance(args, dict):
            raise CommandError("'args' must be an object")
        result = await commands.run(request["command"], args)
    except CommandError as exc:
        return {"ok": False, "error": str(exc)}
    except json.JSONDecodeError:
        return {"ok": False, "error": "a request is one line of JSON"}
    except Exception:
        logger.exception("control command failed")
        return {"ok": False, "error": "internal error (see the daemon's log)"}
    return {"ok": True, "result": result}


# --- the client side -------------------------------------------------------------


def request(
    path: Path, command: str, args: dict[str, Any] | None = None, timeout: float = 30.0
) -> Any:
    """Send one command on a connection of its own and return its result;
    raises CommandError or DaemonUnreachable."""
    with Session(path, timeout) as session:
        return session.request(command, args)


class Session:
    """One connection to the control socket for many commands, one at a time.

    The daemon answers the requests of a connection in order, so a client
    that sends many commands (an orchestrator, the IKE benchmark) saves the
    connection set-up and teardown on both sides that `request` pays per
    command. Not for use by several threads at once.
    """

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._buffer = bytearray()
        try:
            _connect(self._sock, path)
        except BaseException:
            self._sock.close()
            raise

    def request(self, command: str, args: dict[str, Any] | None = None) -> Any:
        """Send one command and return its result; raises CommandError, or
        DaemonUnreachable once the daemon has closed the session."""
        line = json.dumps({"command": command, "args": args or {}}).encode() + b"\n"
        try:
            self._sock.sendall(line)
            answer = self._next_line()
        except TimeoutError:
            raise CommandError("the daemon did not answer in time") from None
        except OSError as exc:
            raise DaemonUnreachable(f"the control session broke: {exc}") from None
        return _result(answer)

    def _next_line(self) -> bytes:
        searched = 0  # a long answer (`sas` of many IKE SAs) is scanned once
        while (end := self._buffer.find(b"\n", searched)) < 0:
            searched = len(self._buffer)
            chunk = self._sock.recv(65536)
            if not chunk:
                raise DaemonUnreachable(
                    "the daemon closed the connection without an answer"
                )
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _result(answer: bytes) -> Any:
    reply = json.loads(answer)
    if not reply.get("ok"):
        raise CommandError(str(reply.get("error", "failed")))
    return reply.get("result")


def _connect(sock: socket.socket, path: Path) -> None:
    try:
        sock.connect(str(path))
    except PermissionError:
        raise DaemonUnreachable(
            f"permission denied on {path}: the control socket is for root"
        ) from None
    except (FileNotFoundError, ConnectionRefusedError):
        raise DaemonUnreachable(
            f"cannot reach the daemon at {path}: is `qsgw run` started?"
        ) from None
