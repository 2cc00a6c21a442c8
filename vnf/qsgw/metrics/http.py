"""A small asyncio HTTP endpoint serving `GET /metrics`.

It runs on the daemon's event loop, so scrapes read SA state from the same
thread that changes it; no lock and no second thread are needed.
"""

from __future__ import annotations

import asyncio
import logging

from qsgw.metrics.gateway import CONTENT_TYPE, GatewayMetrics

logger = logging.getLogger(__name__)

_READ_TIMEOUT = 5.0
_MAX_HEADER_LINES = 100


async def serve_metrics(
    metrics: GatewayMetrics, host: str, port: int
) -> asyncio.Server:
    """Start serving; the caller closes the returned server."""

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            await asyncio.wait_for(_answer(metrics, reader, writer), _READ_TIMEOUT)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            logger.exception("metrics request failed")
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)


async def _answer(
    metrics: GatewayMetrics,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    request = (await reader.readline()).decode("latin-1").split()
    for _ in range(_MAX_HEADER_LINES):
        if (await reader.readline()) in (b"\r\n", b"\n", b""):
            break
    if len(request) < 2 or request[0] not in ("GET", "HEAD"):
        _respond(writer, "405 Method Not Allowed", "text/plain", b"GET only\n")
    elif request[1].split("?")[0] not in ("/metrics", "/"):
        _respond(writer, "404 Not Found", "text/plain", b"try /metrics\n")
    else:
        body = metrics.exposition() if request[0] == "GET" else b""
        _respond(writer, "200 OK", CONTENT_TYPE, body)
    await writer.drain()


def _respond(
    writer: asyncio.StreamWriter, status: str, content_type: str, body: bytes
) -> None:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + body)
