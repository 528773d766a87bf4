"""Reading helpers for the tests of :mod:`keepalive.trio` streams."""

from __future__ import annotations

from keepalive.trio import MonitoredStream


async def read_until(stream: MonitoredStream, size: int) -> bytes:
    """Up to ``size`` bytes from ``stream``: fewer only where the stream ends first."""
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    return data


async def echo(stream: MonitoredStream, data: bytes) -> bytes:
    """Send ``data`` and read back as many bytes (from an echoing peer)."""
    await stream.send_all(data)
    return await read_until(stream, len(data))
