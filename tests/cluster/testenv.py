"""A real Kubernetes control plane for the cluster tests.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as
plain processes on 127.0.0.1, built from Go modules by
``scripts/build-k8s-testenv.sh``; kwok plays the kubelet of every node
annotated ``kwok.x-k8s.io/node=fake``. Timings are short so that node
failure is noticed, tainted and acted on within seconds:

- kwok renews each node's Lease every few seconds (``NODE_LEASE_SECONDS``);
- the node lifecycle controller looks every second and gives a node
  ``NODE_MONITOR_GRACE_SECONDS`` without a renewal before calling it unknown;
- pods tolerate ``not-ready``/``unreachable`` for ``TOLERATION_SECONDS``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import itertools
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-k8s-testenv.sh"
K8S_VERSION = "v1.36.3"
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)

NODE_LEASE_SECONDS = 10
NODE_MONITOR_GRACE_SECONDS = 20
TOLERATION_SECONDS = 5
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
NOT_READY_STAGE_LABEL = "node-not-ready.stage.kwok.x-k8s.io"
DEFAULT_EXTENDED_RESOURCES = {
    "intel.com/intel_sriov_netdevice": "8",
    "qat.intel.com/cy": "4",
}
LOG_TAIL_LINES = 40

# The Multus NetworkAttachmentDefinition, from its specification
# (k8s.cni.cncf.io/v1): a namespaced kind whose spec holds a CNI config
# as a JSON string.
NETWORK_ATTACHMENT_DEFINITION_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "network-attachment-definitions.k8s.cni.cncf.io"},
    "spec": {
        "group": "k8s.cni.cncf.io",
        "scope": "Namespaced",
        "names": {
            "plural": "network-attachment-definitions",
            "singular": "network-attachment-definition",
            "kind": "NetworkAttachmentDefinition",
            "shortNames": ["net-attach-def"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "metadata": {"type": "object"},
                            "spec": {
                                "type": "object",
                                "properties": {"config": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or driven."""


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.5
) -> None:
    """Polls ``predicate`` until it holds; raises after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- binaries ----------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("QSGW_CACHE", "/var/cache/qsgw"))


def testenv_dir() -> Path:
    return cache_dir() / "k8s" / K8S_VERSION


def missing_binaries(bin_dir: Path) -> list[str]:
    return [name for name in BINARIES if not os.access(bin_dir / name, os.X_OK)]


def ensure_binaries(timeout: float = 3600.0) -> Path:
    """The bin directory, after building whatever is missing from it."""
    bin_dir = testenv_dir() / "bin"
    stages = testenv_dir() / "kwok-stages.yaml"
    if not missing_binaries(bin_dir) and stages.is_file():
        return bin_dir
    env = dict(os.environ, K8S_VERSION=K8S_VERSION)
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-LOG_TAIL_LINES:])
        status = f"{BUILD_SCRIPT.name} exited with status {result.returncode}"
        raise ControlPlaneError(f"{status}:\n{tail}")
    return bin_dir


# --- PKI ---------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """Files of the test PKI: a CA, the apiserver's serving pair, an admin
    client pair (group system:masters) and the service-account signing key."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    service_account_key: Path
    service_account_public_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
    )


def make_pki(directory: Path) -> Pki:
    """A fresh CA and the key pairs the control plane needs, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("qsgw-testenv-ca")
    ca_cert = (
        _certificate(ca_name, ca_key, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(ca_key, hashes.SHA256())
    )

    serving_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes.default.svc"),
    ]
    serving_cert = (
        _certificate(_name("kube-apiserver"), serving_key, ca_name, ca_key)
        .add_extension(x509.SubjectAlternativeName(names), False)
        .sign(ca_key, hashes.SHA256())
    )

    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin_subject = _name("qsgw-testenv-admin", "system:masters")
    admin_cert = _certificate(admin_subject, admin_key, ca_name, ca_key).sign(
        ca_key, hashes.SHA256()
    )

    pki = Pki(*(directory / n for n in _PKI_FILES))
    _write_cert(pki.ca_cert, ca_cert)
    _write_key(pki.ca_key, ca_key)
    _write_cert(pki.serving_cert, serving_cert)
    _write_key(pki.serving_key, serving_key)
    _write_cert(pki.admin_cert, admin_cert)
    _write_key(pki.admin_key, admin_key)
    service_account_key = ec.generate_private_key(ec.SECP256R1())
    _write_key(pki.service_account_key, service_account_key)
    public_pem = service_account_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pki.service_account_public_key.write_bytes(public_pem)
    return pki


_PKI_FILES = (
    "ca.crt",
    "ca.key",
    "apiserver.crt",
    "apiserver.key",
    "admin.crt",
    "admin.key",
    "service-account.key",
    "service-account.pub",
)


def write_kubeconfig(path: Path, server: str, pki: Pki) -> None:
    """An admin kubeconfig for ``server`` with the PKI's files embedded."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "testenv",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": b64(pki.ca_cert),
                },
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate-data": b64(pki.admin_cert),
                    "client-key-data": b64(pki.admin_key),
                },
            }
        ],
        "contexts": [
            {"name": "testenv", "context": {"cluster": "testenv", "user": "admin"}}
        ],
        "current-context": "testenv",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


# --- processes ---------------------------------------------------------------


@dataclass
class Component:
    """One control-plane process, its output going to ``log``."""

    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """Stops exactly the process this component started."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=grace)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _https_ok(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# --- the control plane -------------------------------------------------------


@dataclass
class ControlPlane:
    """A running control plane and helpers to drive it."""

    workdir: Path
    bin_dir: Path
    kubeconfig: Path
    server: str
    pki: Pki
    components: list[Component] = field(default_factory=list)
    startup_seconds: float = 0.0
    _node_numbers: Iterator[int] = field(default_factory=itertools.count)

    @property
    def kubectl_path(self) -> Path:
        return self.bin_dir / "kubectl"

    @property
    def helm_path(self) -> Path:
        return self.bin_dir / "helm"

    def env(self) -> dict[str, str]:
        """Environment for clients of this cluster (kubectl, helm, kopf)."""
        home = self.workdir / "home"
        return dict(
            os.environ,
            KUBECONFIG=str(self.kubeconfig),
            KUBECACHEDIR=str(home / "kube-cache"),
            HELM_CACHE_HOME=str(home / "helm-cache"),
            HELM_CONFIG_HOME=str(home / "helm-config"),
            HELM_DATA_HOME=str(home / "helm-data"),
        )

    def _run(
        self, argv: Sequence[str], stdin: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            command = " ".join([Path(argv[0]).name, *argv[1:3]])
            raise ControlPlaneError(
                f"{command} ... exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def kubectl(
        self,
        *args: str,
        stdin: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args]
        return self._run(argv, stdin, check, timeout)

    def helm(
        self, *args: str, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.helm_path), "--kubeconfig", str(self.kubeconfig), *args]
        return self._run(argv, None, check, timeout)

    def apply(self, *objects: Mapping[str, Any]) -> None:
        """``kubectl apply`` of the given objects."""
        document = yaml.safe_dump_all(objects)
        self.kubectl("apply", "-f", "-", stdin=document)

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    # --- nodes ---------------------------------------------------------------

    def create_nodes(
        self,
        count: int,
        zones: Sequence[str] = ("zone-a", "zone-b", "zone-c"),
        extra_allocatable: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        prefix: str = "kwok-node",
        timeout: float = 60.0,
    ) -> list[str]:
        """Creates ``count`` kwok nodes, zones assigned round-robin, and
        waits until each is Ready. Returns their names.

        ``extra_allocatable`` defaults to ``DEFAULT_EXTENDED_RESOURCES``;
        ``labels`` are added to every node (e.g. to keep a test's pods on
        its own nodes)."""
        if extra_allocatable is None:
            extra_allocatable = DEFAULT_EXTENDED_RESOURCES
        names = [f"{prefix}-{next(self._node_numbers)}" for _ in range(count)]
        nodes = [
            fake_node(name, zones[i % len(zones)], extra_allocatable, labels or {})
            for i, name in enumerate(names)
        ]
        self.apply(*nodes)
        wait_until(
            lambda: all(self.node_ready(n) for n in names),
            timeout,
            f"nodes {', '.join(names)} to become Ready",
        )
        return names

    def node_ready(self, name: str) -> bool:
        node = self.get_json("node", name)
        conditions = node.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def set_node_not_ready(self, name: str) -> None:
        """Makes kwok report the node NotReady (its chaos stage)."""
        self.kubectl("label", "node", name, f"{NOT_READY_STAGE_LABEL}=true")

    def delete_node(self, name: str) -> None:
        self.kubectl("delete", "node", name, "--wait=true")

    # --- diagnostics ---------------------------------------------------------

    def logs_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        parts = [
            f"==== {c.name} ({c.log}) ====\n{c.tail(lines)}" for c in self.components
        ]
        return "\n".join(parts)

    def stop(self) -> None:
        for component in reversed(self.components):
            component.stop()


def fake_node(
    name: str, zone: str, extras: Mapping[str, str], labels: Mapping[str, str]
) -> dict[str, Any]:
    """A Node object that kwok will manage, with the given extended resources."""
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110", **extras}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                KWOK_NODE_ANNOTATION: "fake",
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name,
                "topology.kubernetes.io/zone": zone,
                "type": "kwok",
                **labels,
            },
        },
        "status": {"allocatable": resources, "capacity": resources},
    }


# --- start-up ----------------------------------------------------------------


def _etcd_args(cp: ControlPlane, ports: Mapping[str, int]) -> list[str]:
    client_url = f"http://127.0.0.1:{ports['etcd']}"
    peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
    return [
        str(cp.bin_dir / "etcd"),
        "--name=testenv",
        f"--data-dir={cp.workdir / 'etcd'}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=testenv={peer_url}",
        "--unsafe-no-fsync=true",
        "--quota-backend-bytes=2147483648",
    ]


def _apiserver_args(cp: ControlPlane, ports: Mapping[str, int]) -> list[str]:
    pki = cp.pki
    return [
        str(cp.bin_dir / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={ports['kube-apiserver']}",
        f"--cert-dir={cp.workdir / 'apiserver-certs'}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        f"--service-account-issuer={cp.server}",
        f"--service-account-key-file={pki.service_account_public_key}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        "--service-cluster-ip-range=10.96.0.0/16",
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=true",
        "--enable-priority-and-fairness=false",
        f"--default-not-ready-toleration-seconds={TOLERATION_SECONDS}",
        f"--default-unreachable-toleration-seconds={TOLERATION_SECONDS}",
    ]


def _delegating_args(cp: ControlPlane, name: str, port: int) -> list[str]:
    """Flags shared by the controller manager and the scheduler: the admin
    kubeconfig for everything, serving /healthz on 127.0.0.1."""
    kubeconfig = str(cp.kubeconfig)
    return [
        str(cp.bin_dir / name),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={cp.workdir / (name + '-certs')}",
        "--leader-elect=false",
        "--kube-api-qps=500",
        "--kube-api-burst=1000",
    ]


def _controller_manager_args(cp: ControlPlane, ports: Mapping[str, int]) -> list[str]:
    name = "kube-controller-manager"
    return [
        *_delegating_args(cp, name, ports[name]),
        f"--root-ca-file={cp.pki.ca_cert}",
        f"--service-account-private-key-file={cp.pki.service_account_key}",
        f"--cluster-signing-cert-file={cp.pki.ca_cert}",
        f"--cluster-signing-key-file={cp.pki.ca_key}",
        "--use-service-account-credentials=false",
        "--node-monitor-period=1s",
        f"--node-monitor-grace-period={NODE_MONITOR_GRACE_SECONDS}s",
    ]


def _scheduler_args(cp: ControlPlane, ports: Mapping[str, int]) -> list[str]:
    return _delegating_args(cp, "kube-scheduler", ports["kube-scheduler"])


def _kwok_args(cp: ControlPlane, ports: Mapping[str, int]) -> list[str]:
    # nodes report 127.0.0.1 so that nothing ever dials off the machine; pod
    # IPs come from --cidr and are never reachable
    return [
        str(cp.bin_dir / "kwok"),
        f"--kubeconfig={cp.kubeconfig}",
        f"--config={testenv_dir() / 'kwok-stages.yaml'}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
        "--manage-nodes-with-label-selector=",
        "--manage-single-node=",
        "--cidr=10.244.0.0/16",
        "--node-ip=127.0.0.1",
        f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
        f"--server-address=127.0.0.1:{ports['kwok']}",
    ]


# in start-up order; each is healthy before the next starts
COMPONENTS: dict[str, Callable[[ControlPlane, Mapping[str, int]], list[str]]] = {
    "etcd": _etcd_args,
    "kube-apiserver": _apiserver_args,
    "kube-controller-manager": _controller_manager_args,
    "kube-scheduler": _scheduler_args,
    "kwok": _kwok_args,
}


def _health_url(name: str, ports: Mapping[str, int]) -> str:
    if name == "etcd":
        return f"http://127.0.0.1:{ports['etcd']}/health"
    if name == "kwok":
        return f"http://127.0.0.1:{ports['kwok']}/healthz"
    path = "/readyz" if name == "kube-apiserver" else "/healthz"
    return f"https://127.0.0.1:{ports[name]}{path}"


def _start_component(
    name: str, cp: ControlPlane, ports: Mapping[str, int], timeout: float
) -> None:
    component = Component(name, COMPONENTS[name](cp, ports), cp.workdir / f"{name}.log")
    cp.components.append(component)
    component.start()

    # the apiserver's /readyz needs the admin's certificate; the
    # controllers' /healthz is always allowed, over their self-signed cert
    context = ssl.create_default_context(cafile=str(cp.pki.ca_cert))
    context.load_cert_chain(str(cp.pki.admin_cert), str(cp.pki.admin_key))
    if name != "kube-apiserver":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    url = _health_url(name, ports)
    check = _http_ok if url.startswith("http:") else lambda u: _https_ok(u, context)

    def healthy() -> bool:
        if not component.running():
            code = component.process.poll() if component.process else None
            raise ControlPlaneError(f"{name} exited with status {code}")
        return check(url)

    wait_until(healthy, timeout, f"{name} to report healthy at {url}", 0.2)


def _install_crds(cp: ControlPlane) -> None:
    cp.apply(NETWORK_ATTACHMENT_DEFINITION_CRD)
    name = NETWORK_ATTACHMENT_DEFINITION_CRD["metadata"]["name"]
    cp.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


def _default_service_account_exists(cp: ControlPlane) -> bool:
    result = cp.kubectl("get", "serviceaccount", "default", check=False)
    return result.returncode == 0


@contextlib.contextmanager
def running_control_plane(
    workdir: Path, bin_dir: Path, timeout: float = 90.0
) -> Iterator[ControlPlane]:
    """Starts the whole control plane in ``workdir``, yields it ready, and
    stops exactly the processes it started, in reverse order."""
    ports = {name: free_port() for name in (*COMPONENTS, "etcd-peer")}
    server = f"https://127.0.0.1:{ports['kube-apiserver']}"
    pki = make_pki(workdir / "pki")
    kubeconfig = workdir / "kubeconfig"
    write_kubeconfig(kubeconfig, server, pki)
    cp = ControlPlane(workdir, bin_dir, kubeconfig, server, pki)
    try:
        for name in COMPONENTS:
            _start_component(name, cp, ports, timeout)
        _install_crds(cp)
        wait_until(
            lambda: _default_service_account_exists(cp),
            timeout,
            "the default ServiceAccount",
        )
    except BaseException:
        print(cp.logs_tail(), file=sys.stderr)
        cp.stop()
        raise
    try:
        yield cp
    finally:
        cp.stop()
