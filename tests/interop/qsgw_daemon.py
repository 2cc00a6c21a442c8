"""The qsgw daemon as an interop peer: `qsgw run` inside a network namespace.

Generic on purpose: it takes a configuration file (format documented in
docs/configuration.md) and the control socket path that configuration names,
and queries the daemon with `qsgw --socket PATH sas --json`. Unlike the
strongSwan and Libreswan peers it runs on the host filesystem (the project's
virtualenv), only its network is namespaced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .chroot import DaemonProcess, wait_until
from .netns import COMMAND_TIMEOUT, Namespace, NetnsError


def qsgw_executable() -> Path:
    """The `qsgw` entry point of the virtualenv running these tests."""
    return Path(sys.executable).parent / "qsgw"


class QsgwDaemon:
    """`qsgw run --config CONFIG` in NAMESPACE, output captured in WORKDIR."""

    def __init__(
        self,
        name: str,
        namespace: Namespace,
        config: Path,
        control_socket: Path,
        workdir: Path,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.config = config
        self.control_socket = control_socket
        self.workdir = workdir
        self.extra_args = tuple(extra_args)
        self.process: DaemonProcess | None = None

    @property
    def output_file(self) -> Path:
        return self.workdir / f"{self.name}.out"

    def output_text(self) -> str:
        if not self.output_file.exists():
            return ""
        return self.output_file.read_text(errors="replace")

    def start(self, timeout: float = 20.0) -> None:
        """Starts the daemon and waits until its control socket answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [str(qsgw_executable()), "run", "--config", str(self.config)]
        argv += self.extra_args
        self.process = DaemonProcess(self.namespace.exec_argv(argv), self.output_file)
        if not wait_until(self._answers, timeout, interval=0.1):
            raise NetnsError(f"{self.name}: qsgw did not answer in {timeout} s")

    def _answers(self) -> bool:
        if self.process is None or not self.process.running():
            raise NetnsError(f"{self.name}: qsgw exited early")
        if not self.control_socket.exists():
            return False
        return self._cli("sas", "--json", check=False).returncode == 0

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def _cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(qsgw_executable()), "--socket", str(self.control_socket)]
        result = subprocess.run(
            [*argv, *args],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        if check and result.returncode != 0:
            detail = result.stderr.strip()[-2000:]
            raise NetnsError(f"qsgw {args[0]} exited {result.returncode}: {detail}")
        return result

    def cli(self, *args: str) -> str:
        """Runs `qsgw --socket SOCKET ARGS...`; returns its stdout."""
        return self._cli(*args).stdout

    def sas(self) -> Any:
        """The daemon's IKE and Child SAs, as `qsgw sas --json` gives them."""
        return json.loads(self.cli("sas", "--json"))

    def try_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Runs `qsgw --socket SOCKET ARGS...` whatever its exit status."""
        return self._cli(*args, check=False)

    def initiate(
        self, connection: str, child: str | None = None, wait: float = 15.0
    ) -> str:
        """`qsgw initiate --conn CONNECTION [--child CHILD] --wait WAIT`."""
        args = ["initiate", "--conn", connection, "--wait", str(wait)]
        if child is not None:
            args += ["--child", child]
        return self.cli(*args)

    def established(self) -> list[Any]:
        """The daemon's IKE SAs in state ESTABLISHED."""
        return [sa for sa in self.sas() if sa["state"] == "ESTABLISHED"]

    def terminate_ike(self, unique_id: int, wait: float = 10.0) -> str:
        """`qsgw terminate --ike UNIQUE_ID --wait WAIT` (sends the Delete)."""
        return self.cli("terminate", "--ike", str(unique_id), "--wait", str(wait))

    def rekey_ike(self, unique_id: int) -> str:
        return self.cli("rekey", "--ike", str(unique_id))

    def rekey_child(self, unique_id: int) -> str:
        return self.cli("rekey", "--child", str(unique_id))
