"""Linux TUN devices (Documentation/networking/tuntap.rst): layer-3 packets
without the packet-information prefix, one file descriptor per queue."""

from __future__ import annotations

import fcntl
import os
import struct

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFNAMSIZ = 16


def open_tun(name: str, *, multi_queue: bool = False) -> int:
    """A non-blocking file descriptor for (a queue of) TUN device `name`,
    which exists until its last descriptor is closed."""
    if not name or len(name) >= IFNAMSIZ:
        raise ValueError(f"interface name must be 1..{IFNAMSIZ - 1} characters")
    flags = IFF_TUN | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0)
    request = struct.pack("16sH22x", name.encode(), flags)

    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, request)
    except OSError:
        os.close(fd)
        raise
    return fd
