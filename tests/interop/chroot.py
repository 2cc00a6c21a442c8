"""Running programs from the peer root filesystem inside a network namespace.

Each program runs as

    ip netns exec NS unshare -m --propagation private sh -c \
        'mount proc, /dev, /sys and the per-peer binds; exec chroot ROOTFS ARGV'

so its mounts live in a private mount namespace that vanishes with it, and
every exec keeps the same process id: the id we record is the daemon's own,
and stopping a peer signals that one process only.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .netns import COMMAND_TIMEOUT, Namespace, NetnsError


@dataclass(frozen=True)
class Bind:
    """A host directory or file made visible at TARGET inside the root."""

    source: Path
    target: str


@dataclass(frozen=True)
class Chroot:
    """The peer root filesystem with the binds of one peer."""

    rootfs: Path
    binds: tuple[Bind, ...]

    def shell_script(self, argv: Sequence[str]) -> str:
        root = shlex.quote(str(self.rootfs))
        steps = [
            f"mount -t proc proc {root}/proc",
            f"mount --rbind /dev {root}/dev",
            f"mount --rbind /sys {root}/sys",
        ]
        for bind in self.binds:
            source = shlex.quote(str(bind.source))
            target = shlex.quote(f"{self.rootfs}{bind.target}")
            steps.append(f"mount --bind {source} {target}")
        steps.append(f"exec chroot {root} {shlex.join(argv)}")
        return " && ".join(steps)

    def argv(self, namespace: Namespace, argv: Sequence[str]) -> list[str]:
        """The host argv running ARGV chrooted inside NAMESPACE."""
        private = ["unshare", "-m", "--propagation", "private"]
        return namespace.exec_argv([*private, "sh", "-c", self.shell_script(argv)])

    def run(
        self,
        namespace: Namespace,
        argv: Sequence[str],
        timeout: float = COMMAND_TIMEOUT,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Runs a one-shot command; raises NetnsError when CHECK and it fails."""
        result = subprocess.run(
            self.argv(namespace, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            detail = (result.stderr.strip() or result.stdout.strip())[-2000:]
            raise NetnsError(f"{argv[0]} exited {result.returncode}: {detail}")
        return result


class DaemonProcess:
    """One long-running program started by us; only its PID is ever signalled."""

    def __init__(self, argv: Sequence[str], output: Path) -> None:
        self._output: IO[bytes] = output.open("ab")
        self._process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self._process.pid

    def running(self) -> bool:
        return self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after TIMEOUT; always reaps the process."""
        if self.running():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self._process.wait(timeout)
        self._output.close()


def wait_until(
    condition_met: Callable[[], bool], timeout: float, interval: float = 0.05
) -> bool:
    """Polls CONDITION_MET until it is true or TIMEOUT seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if condition_met():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
