"""qsgw configurations for the interop tests, and a gateway that runs them.

`site_to_site` builds the qsgw twin of strongswan.site_to_site: the same
connection name, mirrored addresses, identities and traffic selectors, in
the vocabulary of docs/configuration.md. `QsgwGateway` writes the YAML file
and the secret files (mode 0600 in a 0700 folder, never in the YAML) into
its working directory and runs `qsgw run` in the site's namespace.

The gateway runs with `data_plane: recording` unless a test sets
`QsgwGateway.data_plane`: the host kernel has no ESP (so no XFRM states),
so most tests check IKE and what both sides agreed on, not ESP packets;
the traffic tests run the userspace data plane (TUN + ESP in UDP).

`QsgwGateway.metrics_port` turns on the Prometheus endpoint on the
namespace's own loopback, and `scrape_metrics` reads it from inside.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .netns import COMMAND_TIMEOUT, NetnsError, Site
from .qsgw_daemon import QsgwDaemon

DEFAULT_PROPOSALS = ("aes256gcm16-prfsha384-x25519",)
DEFAULT_ESP_PROPOSALS = ("aes256gcm16",)
METRICS_ADDRESS = "127.0.0.1"  # the namespace's loopback, not the host's


@dataclass(frozen=True)
class QsgwChild:
    """One `children.<name>` section."""

    name: str
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    esp_proposals: tuple[str, ...] = DEFAULT_ESP_PROPOSALS

    def document(self) -> dict[str, Any]:
        return {
            "local_ts": list(self.local_ts),
            "remote_ts": list(self.remote_ts),
            "esp_proposals": list(self.esp_proposals),
        }


@dataclass(frozen=True)
class QsgwSecrets:
    """The PSK and optional PPK of one connection; values never in a repr."""

    psk: bytes = field(repr=False)
    ppk: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class QsgwConnection:
    """One `connections.<name>` section (PSK authentication).

    `ppk_id` names the RFC 8784 PPK; `childless` is as in swanctl (RFC 6023).
    `extra` overrides or adds settings of the section (e.g. `dpd_delay`).
    """

    name: str
    local_addrs: tuple[str, ...]
    remote_addrs: tuple[str, ...]
    local_id: str
    remote_id: str
    proposals: tuple[str, ...] = DEFAULT_PROPOSALS
    ppk_id: str | None = None
    ppk_required: bool = False
    childless: str = "allow"
    children: tuple[QsgwChild, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def document(self, psk_file: Path, ppk_file: Path | None) -> dict[str, Any]:
        section: dict[str, Any] = {
            "local_addrs": list(self.local_addrs),
            "remote_addrs": list(self.remote_addrs),
            "local": {"id": self.local_id, "auth": "psk"},
            "remote": {"id": self.remote_id, "auth": "psk"},
            "proposals": list(self.proposals),
            "psk_file": str(psk_file),
            "childless": self.childless,
            # no liveness checks in the middle of a test
            "dpd_delay": 0,
        }
        if self.ppk_id is not None and ppk_file is not None:
            section["ppk"] = {
                "id": self.ppk_id,
                "file": str(ppk_file),
                "required": self.ppk_required,
            }
        section.update(self.extra)
        section["children"] = {c.name: c.document() for c in self.children}
        return section


def site_to_site(
    name: str,
    local: Site,
    remote: Site,
    family: int = 4,
    proposals: tuple[str, ...] = DEFAULT_PROPOSALS,
    esp_proposals: tuple[str, ...] = DEFAULT_ESP_PROPOSALS,
    with_child: bool = True,
    childless: str = "allow",
    ppk_id: str | None = None,
) -> QsgwConnection:
    """A PSK connection from LOCAL to REMOTE over IP version FAMILY.

    With WITH_CHILD, one Child SA (also called NAME) joins the two sites'
    inner addresses. A PPK_ID makes the PPK required (RFC 8784).
    """
    children: tuple[QsgwChild, ...] = ()
    if with_child:
        local_ts = (local.inner_net(family),)
        remote_ts = (remote.inner_net(family),)
        children = (QsgwChild(name, local_ts, remote_ts, esp_proposals),)
    return QsgwConnection(
        name,
        (local.outer(family),),
        (remote.outer(family),),
        local.identity,
        remote.identity,
        proposals=proposals,
        ppk_id=ppk_id,
        ppk_required=ppk_id is not None,
        childless=childless,
        children=children,
    )


def _write_secret(path: Path, value: bytes) -> Path:
    path.touch(mode=0o600)
    path.write_text("0x" + value.hex() + "\n")
    return path


def gateway_document(
    site: Site,
    control_socket: Path,
    connections: dict[str, Any],
    data_plane: str = "recording",
    metrics_port: int | None = None,
) -> dict[str, Any]:
    """The whole YAML document: the gateway section plus CONNECTIONS.

    With METRICS_PORT, the metrics endpoint listens on the loopback of the
    gateway's namespace.
    """
    gateway: dict[str, Any] = {
        "listen": [site.outer4, site.outer6],
        "control_socket": str(control_socket),
        "data_plane": data_plane,
        "log": {"level": "debug", "format": "text"},
        "shutdown_timeout": "2s",
    }
    if metrics_port is not None:
        gateway["metrics"] = {"address": METRICS_ADDRESS, "port": metrics_port}
    return {"gateway": gateway, "connections": connections}


# run by the test's own interpreter inside the namespace: no curl needed
_SCRAPE = """
import sys, urllib.request
url = sys.argv[1]
with urllib.request.urlopen(url, timeout=float(sys.argv[2])) as answer:
    sys.stdout.write(answer.read().decode())
"""


class QsgwGateway:
    """qsgw for SITE, with its configuration and secrets under WORKDIR."""

    def __init__(self, name: str, site: Site, workdir: Path) -> None:
        self.name = name
        self.site = site
        self.workdir = workdir
        # no ESP in the host kernel; see the module docstring
        self.data_plane = "recording"
        self.metrics_port: int | None = None
        self.config_file = workdir / "qsgw.yaml"
        self.control_socket = workdir / "qsgw.sock"
        self.daemon: QsgwDaemon | None = None

    def write_config(
        self,
        connections: Sequence[QsgwConnection],
        secrets: dict[str, QsgwSecrets],
    ) -> Path:
        """Writes qsgw.yaml and one secret file per PSK and PPK.

        SECRETS is keyed by connection name.
        """
        secret_dir = self.workdir / "secrets"
        secret_dir.mkdir(parents=True, exist_ok=True)
        secret_dir.chmod(0o700)
        sections: dict[str, Any] = {}
        for connection in connections:
            secret = secrets[connection.name]
            psk_file = _write_secret(secret_dir / f"{connection.name}.psk", secret.psk)
            ppk_file = None
            if secret.ppk is not None:
                ppk_file = _write_secret(
                    secret_dir / f"{connection.name}.ppk", secret.ppk
                )
            sections[connection.name] = connection.document(psk_file, ppk_file)
        document = gateway_document(
            self.site,
            self.control_socket,
            sections,
            self.data_plane,
            self.metrics_port,
        )
        self.config_file.write_text(yaml.safe_dump(document, sort_keys=False))
        return self.config_file

    def start(
        self,
        connections: Sequence[QsgwConnection],
        secrets: dict[str, QsgwSecrets],
    ) -> QsgwDaemon:
        """Writes the configuration and starts `qsgw run` in the namespace."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config(connections, secrets)
        self.daemon = QsgwDaemon(
            "qsgw",
            self.site.namespace,
            self.config_file,
            self.control_socket,
            self.workdir,
        )
        self.daemon.start()
        return self.daemon

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()

    def scrape_metrics(self, timeout: float = 5.0) -> str:
        """GET /metrics from inside the namespace (needs `metrics_port`)."""
        if self.metrics_port is None:
            raise NetnsError(f"{self.name}: metrics_port is not set")
        url = f"http://{METRICS_ADDRESS}:{self.metrics_port}/metrics"
        argv = [sys.executable, "-c", _SCRAPE, url, str(timeout)]
        result = subprocess.run(
            self.site.namespace.exec_argv(argv),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            detail = result.stderr.strip()[-2000:]
            raise NetnsError(f"{self.name}: scraping {url} failed: {detail}")
        return result.stdout
