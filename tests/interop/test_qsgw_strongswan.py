"""qsgw against a real strongSwan 6.1, each in its own network namespace.

qsgw runs in the left namespace, charon in the right one. Every case runs
with qsgw as initiator and as responder, and reads BOTH sides: qsgw through
`qsgw sas --json`, charon through vici's list-sas. They must agree on the
IKE SPIs, on the Child SA SPIs (each side's inbound is the other's
outbound), on every algorithm including each key exchange method, and on
PPK use.

Most cases run qsgw with the recording data plane, because the host kernel
has no ESP: they are IKE-level tests (charon's kernel-libipsec installs its
Child SAs, qsgw records its own). The last case runs qsgw's userspace data
plane (TUN + ESP in UDP) and pings through to charon's kernel-libipsec.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Any

import pytest
from vici.exception import CommandException

from . import strongswan
from .peers import (
    IkeSaStatus,
    IkeSecret,
    PpkSecret,
    SitePair,
    StrongswanPeer,
    wait_until,
)
from .qsgw_configs import QsgwGateway, QsgwSecrets, site_to_site
from .qsgw_daemon import QsgwDaemon
from .strongswan import Secret

pytestmark = [pytest.mark.interop, pytest.mark.netns, pytest.mark.timeout(60)]

X25519 = ("aes256gcm16-prfsha384-x25519",)
HYBRID = ("aes256gcm16-prfsha384-x25519-ke1_mlkem768",)
MLKEM = ("aes256gcm16-prfsha384-mlkem768",)
ESP_HYBRID = ("aes256gcm16-x25519-ke1_mlkem768",)
PPK_ID = "qsgw-ppk-1"
CONNECTION = "net"
NO_SPI = "0000000000000000"

# qsgw's names (swanctl proposal keywords) -> charon's vici names
KE_NAMES = {"x25519": "CURVE_25519", "mlkem768": "ML_KEM_768"}
ENCR_NAMES = {"aes256gcm16": "AES_GCM_16_256"}
PRF_NAMES = {"prfsha384": "PRF_HMAC_SHA2_384"}

ROLES = ["qsgw_initiates", "strongswan_initiates"]


@dataclass(frozen=True)
class Keys:
    """The secrets one side is configured with (values never in a repr)."""

    psk: bytes = b""
    ppk: bytes | None = None

    def __repr__(self) -> str:
        return "Keys(<hidden>)"


def _random_keys(with_ppk: bool) -> Keys:
    return Keys(os.urandom(32), os.urandom(32) if with_ppk else None)


@dataclass(frozen=True)
class Setup:
    """What one test configures on both sides."""

    proposals: tuple[str, ...] = X25519
    esp_proposals: tuple[str, ...] = ("aes256gcm16",)
    ppk: bool = False
    family: int = 4


def _start_both(
    pair: SitePair,
    gateway: QsgwGateway,
    charon: StrongswanPeer,
    setup: Setup,
    keys: tuple[Keys, Keys],
) -> QsgwDaemon:
    """Loads the mirror-image connection "net" into qsgw and charon.

    KEYS are (qsgw's, charon's): equal for a working tunnel.
    """
    qsgw_keys, charon_keys = keys
    ppk_id = PPK_ID if setup.ppk else None
    ours = site_to_site(
        CONNECTION,
        pair.left,
        pair.right,
        setup.family,
        proposals=setup.proposals,
        esp_proposals=setup.esp_proposals,
        ppk_id=ppk_id,
    )
    theirs = strongswan.site_to_site(
        CONNECTION,
        pair.right,
        pair.left,
        setup.family,
        proposals=setup.proposals,
        ppk_id=ppk_id,
    )
    (child,) = theirs.children
    child = replace(child, esp_proposals=setup.esp_proposals)
    theirs = replace(theirs, children=(child,))
    charon.load([theirs], _charon_secrets(pair, charon_keys))
    secrets = {CONNECTION: QsgwSecrets(qsgw_keys.psk, qsgw_keys.ppk)}
    return gateway.start([ours], secrets)


def _charon_secrets(pair: SitePair, keys: Keys) -> list[Secret]:
    ids = (pair.left.identity, pair.right.identity)
    secrets: list[Secret] = [IkeSecret(ids, keys.psk)]
    if keys.ppk is not None:
        secrets.append(PpkSecret(PPK_ID, keys.ppk))
    return secrets


def _initiate(role: str, daemon: QsgwDaemon, charon: StrongswanPeer) -> None:
    if role == "qsgw_initiates":
        daemon.initiate(CONNECTION)
    else:
        charon.initiate(child=CONNECTION, ike=CONNECTION)


# --- reading both sides -------------------------------------------------------


def _qsgw_established(daemon: QsgwDaemon) -> list[dict[str, Any]]:
    return [sa for sa in daemon.sas() if sa["state"] == "ESTABLISHED"]


def _only_qsgw_sa(daemon: QsgwDaemon) -> dict[str, Any]:
    assert wait_until(lambda: bool(_qsgw_established(daemon)), timeout=10)
    sas = _qsgw_established(daemon)
    assert len(sas) == 1, sas
    return sas[0]


def _only_charon_sa(charon: StrongswanPeer) -> IkeSaStatus:
    assert wait_until(lambda: bool(charon.established_ike_sas()), timeout=10)
    sas = charon.established_ike_sas()
    assert len(sas) == 1, sas
    return sas[0]


def _both_sas(
    daemon: QsgwDaemon, charon: StrongswanPeer
) -> tuple[dict[str, Any], IkeSaStatus]:
    return _only_qsgw_sa(daemon), _only_charon_sa(charon)


def _key_exchanges(algorithms: dict[str, str]) -> tuple[str, ...]:
    """ke, then ke1..ke7 as present, in charon's names."""
    keys = ["ke"] + [f"ke{number}" for number in range(1, 8)]
    return tuple(KE_NAMES[algorithms[key]] for key in keys if key in algorithms)


def _assert_same_ike_sa(
    ours: dict[str, Any], theirs: IkeSaStatus, role: str, ppk: bool
) -> None:
    assert ours["initiator"] == (role == "qsgw_initiates")
    assert theirs.initiator == (role != "qsgw_initiates")
    assert (ours["spi_i"], ours["spi_r"]) == (
        theirs.initiator_spi,
        theirs.responder_spi,
    )
    assert NO_SPI not in (ours["spi_i"], ours["spi_r"])
    algorithms = ours["algorithms"]
    assert ENCR_NAMES[algorithms["encr"]] == theirs.encryption
    assert PRF_NAMES[algorithms["prf"]] == theirs.prf
    assert _key_exchanges(algorithms) == theirs.key_exchanges
    assert ours["ppk"] is ppk and theirs.ppk is ppk


def _assert_same_child_sa(ours: dict[str, Any], theirs: IkeSaStatus) -> None:
    installed = [c for c in ours["children"] if c["state"] == "INSTALLED"]
    assert len(installed) == 1, ours["children"]
    (child,) = installed
    (their_child,) = [c for c in theirs.child_sas if c.state == "INSTALLED"]
    # each side's inbound SPI is the other's outbound SPI
    assert (child["inbound_spi"], child["outbound_spi"]) == (
        their_child.spi_out,
        their_child.spi_in,
    )
    assert ENCR_NAMES[child["algorithms"]["encr"]] == their_child.encryption
    assert child["local_ts"] == list(their_child.remote_ts)
    assert child["remote_ts"] == list(their_child.local_ts)


def _assert_tunnel(
    daemon: QsgwDaemon, charon: StrongswanPeer, role: str, ppk: bool = False
) -> tuple[dict[str, Any], IkeSaStatus]:
    ours, theirs = _both_sas(daemon, charon)
    _assert_same_ike_sa(ours, theirs, role, ppk)
    _assert_same_child_sa(ours, theirs)
    return ours, theirs


# --- establishing --------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("role", ROLES)
def test_psk_x25519_ike_and_child_sa_agree_on_both_sides(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
    role: str,
    family: int,
) -> None:
    keys = _random_keys(with_ppk=False)
    setup = Setup(family=family)
    daemon = _start_both(site_pair, qsgw_left, strongswan_right, setup, (keys, keys))

    _initiate(role, daemon, strongswan_right)

    ours, theirs = _assert_tunnel(daemon, strongswan_right, role)
    assert theirs.key_exchanges == ("CURVE_25519",)
    assert ours["local_address"] == site_pair.left.outer(family)
    assert theirs.local_host == site_pair.right.outer(family)


@pytest.mark.parametrize("role", ROLES)
def test_hybrid_x25519_mlkem768_uses_ike_intermediate_with_fragments(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
    role: str,
) -> None:
    keys = _random_keys(with_ppk=False)
    setup = Setup(proposals=HYBRID)
    daemon = _start_both(site_pair, qsgw_left, strongswan_right, setup, (keys, keys))

    _initiate(role, daemon, strongswan_right)

    _ours, theirs = _assert_tunnel(daemon, strongswan_right, role)
    # RFC 9370: X25519 in IKE_SA_INIT, ML-KEM-768 as ADDKE1
    assert theirs.key_exchanges == ("CURVE_25519", "ML_KEM_768")
    # RFC 7383: charon's ML-KEM-768 IKE_INTERMEDIATE request does not fit
    # its fragment_size of 1280, so it goes in two fragments
    log = strongswan_right.log_text()
    if role == "qsgw_initiates":
        assert "received fragment #2 of 2, reassembled" in log
    else:
        assert re.search(r"splitting IKE message \(\d+ bytes\) into 2 frag", log)


@pytest.mark.parametrize("role", ROLES)
def test_mlkem768_alone_in_ike_sa_init_sets_up_the_ike_sa(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
    role: str,
) -> None:
    keys = _random_keys(with_ppk=False)
    setup = Setup(proposals=MLKEM)
    daemon = _start_both(site_pair, qsgw_left, strongswan_right, setup, (keys, keys))

    _initiate(role, daemon, strongswan_right)

    _ours, theirs = _assert_tunnel(daemon, strongswan_right, role)
    assert theirs.key_exchanges == ("ML_KEM_768",)
    assert "IKE_INTERMEDIATE" not in strongswan_right.log_text()


@pytest.mark.parametrize("role", ROLES)
def test_required_ppk_is_used_by_both_sides(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
    role: str,
) -> None:
    keys = _random_keys(with_ppk=True)
    setup = Setup(ppk=True)
    daemon = _start_both(site_pair, qsgw_left, strongswan_right, setup, (keys, keys))

    _initiate(role, daemon, strongswan_right)

    # RFC 8784: both derived SK_d, SK_pi, SK_pr with the PPK
    _ours, theirs = _assert_tunnel(daemon, strongswan_right, role, ppk=True)
    assert theirs.key_exchanges == ("CURVE_25519",)


@pytest.mark.parametrize("role", ROLES)
def test_hybrid_with_required_ppk_uses_both(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
    role: str,
) -> None:
    keys = _random_keys(with_ppk=True)
    setup = Setup(proposals=HYBRID, ppk=True)
    daemon = _start_both(site_pair, qsgw_left, strongswan_right, setup, (keys, keys))

    _initiate(role, daemon, strongswan_right)

    _ours, theirs = _assert_tunnel(daemon, strongswan_right, role, ppk=True)
    assert theirs.key_exchanges == ("CURVE_25519", "ML_KEM_768")
    _assert_no_secret_in_output(daemon, keys)


# --- rekeying -------------------------------------------------------------------


def _installed_child(ours: dict[str, Any]) -> dict[str, Any]:
    children: list[dict[str, Any]] = ours["children"]
    (child,) = [c for c in children if c["state"] == "INSTALLED"]
    return child


def _qsgw_replaced(daemon: QsgwDaemon, key: str, old: str) -> bool:
    """Exactly one established IKE SA (or its one Child SA) and not OLD."""
    sas = _qsgw_established(daemon)
    if len(sas) != 1:
        return False
    if key == "spi_i":
        return bool(sas[0]["spi_i"] != old)
    installed = [c for c in sas[0]["children"] if c["state"] == "INSTALLED"]
    return len(installed) == 1 and installed[0]["inbound_spi"] != old


def _rekey_child(
    role: str,
    daemon: QsgwDaemon,
    charon: StrongswanPeer,
    ours: dict[str, Any],
    theirs: IkeSaStatus,
) -> None:
    if role == "qsgw_initiates":
        daemon.rekey_child(_installed_child(ours)["unique_id"])
    else:
        (child,) = theirs.child_sas
        charon.rekey_child(child.unique_id)


def _rekey_ike(
    role: str,
    daemon: QsgwDaemon,
    charon: StrongswanPeer,
    ours: dict[str, Any],
    theirs: IkeSaStatus,
) -> None:
    if role == "qsgw_initiates":
        daemon.rekey_ike(ours["unique_id"])
    else:
        charon.rekey_ike(theirs.unique_id)


@pytest.mark.parametrize("role", ROLES)
def test_child_sa_rekey_with_hybrid_pfs_and_ike_sa_rekey_replace_spis(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
    role: str,
) -> None:
    keys = _random_keys(with_ppk=False)
    setup = Setup(proposals=HYBRID, esp_proposals=ESP_HYBRID)
    daemon = _start_both(site_pair, qsgw_left, strongswan_right, setup, (keys, keys))
    _initiate(role, daemon, strongswan_right)
    ours, theirs = _assert_tunnel(daemon, strongswan_right, role)
    old_child = _installed_child(ours)["inbound_spi"]

    # CREATE_CHILD_SA { SA, Ni, KEi(x25519), TSi, TSr } then
    # IKE_FOLLOWUP_KE { KEi(mlkem768) } (RFC 9370 §2.2.4)
    _rekey_child(role, daemon, strongswan_right, ours, theirs)
    assert wait_until(
        lambda: _qsgw_replaced(daemon, "inbound_spi", old_child), timeout=10
    )
    ours, theirs = _assert_tunnel(daemon, strongswan_right, role)
    assert re.search(
        r"(generating|parsed) IKE_FOLLOWUP_KE", strongswan_right.log_text()
    )
    child = _installed_child(ours)
    assert _key_exchanges(child["algorithms"]) == ("CURVE_25519", "ML_KEM_768")
    (their_child,) = [c for c in theirs.child_sas if c.state == "INSTALLED"]
    assert their_child.key_exchanges == ("CURVE_25519", "ML_KEM_768")

    _rekey_ike(role, daemon, strongswan_right, ours, theirs)
    old_ike = ours["spi_i"]
    assert wait_until(lambda: _qsgw_replaced(daemon, "spi_i", old_ike), timeout=10)
    assert wait_until(
        lambda: _charon_ike_replaced(strongswan_right, old_ike), timeout=10
    )
    ours, theirs = _assert_tunnel(daemon, strongswan_right, role)
    assert theirs.key_exchanges == ("CURVE_25519", "ML_KEM_768")


def _charon_ike_replaced(charon: StrongswanPeer, old_spi_i: str) -> bool:
    sas = charon.list_sas()
    return len(sas) == 1 and sas[0].initiator_spi != old_spi_i


# --- refusals ---------------------------------------------------------------------


def _assert_nothing_established(daemon: QsgwDaemon, charon: StrongswanPeer) -> None:
    # neither side kept an SA in any state, and the daemon still answers
    assert wait_until(lambda: daemon.sas() == [], timeout=5), daemon.sas()
    assert wait_until(lambda: charon.list_sas() == [], timeout=5)
    assert daemon.try_cli("sas", "--json").returncode == 0


def _attempt(role: str, daemon: QsgwDaemon, charon: StrongswanPeer) -> None:
    """Initiates and expects the initiating side to report a failure."""
    if role == "qsgw_initiates":
        result = daemon.try_cli("initiate", "--conn", CONNECTION, "--wait", "10")
        assert result.returncode == 1, result
    else:
        with pytest.raises(CommandException):
            charon.initiate(child=CONNECTION, ike=CONNECTION, timeout=10)


@pytest.mark.parametrize("role", ROLES)
def test_wrong_psk_is_refused_with_authentication_failed(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
    role: str,
) -> None:
    keys = (_random_keys(with_ppk=False), _random_keys(with_ppk=False))
    daemon = _start_both(site_pair, qsgw_left, strongswan_right, Setup(), keys)

    _attempt(role, daemon, strongswan_right)

    _assert_nothing_established(daemon, strongswan_right)
    _assert_authentication_failed(role, daemon, strongswan_right)
    assert daemon.process is not None and daemon.process.running()


@pytest.mark.parametrize("role", ROLES)
def test_wrong_ppk_is_refused_with_authentication_failed(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
    role: str,
) -> None:
    psk = os.urandom(32)
    keys = (Keys(psk, os.urandom(32)), Keys(psk, os.urandom(32)))
    setup = Setup(proposals=HYBRID, ppk=True)
    daemon = _start_both(site_pair, qsgw_left, strongswan_right, setup, keys)

    _attempt(role, daemon, strongswan_right)

    # RFC 8784 §3: AUTH is computed with the PPK-modified SK_pi/SK_pr
    _assert_nothing_established(daemon, strongswan_right)
    _assert_authentication_failed(role, daemon, strongswan_right)
    assert daemon.process is not None and daemon.process.running()
    _assert_no_secret_in_output(daemon, keys[0])


def _assert_no_secret_in_output(daemon: QsgwDaemon, keys: Keys) -> None:
    """Not even qsgw's debug log shows a PSK or PPK (hex or raw)."""
    output = daemon.output_text()
    secrets = [keys.psk] + ([keys.ppk] if keys.ppk is not None else [])
    for secret in secrets:
        assert secret.hex() not in output.lower()
        assert secret.decode("latin-1") not in output


def _assert_authentication_failed(
    role: str, daemon: QsgwDaemon, charon: StrongswanPeer
) -> None:
    """RFC 7296 §2.21.2: the responder answers AUTHENTICATION_FAILED."""
    charon_log = charon.log_text()
    if role == "qsgw_initiates":
        refusal = r"generating IKE_AUTH response \d+ \[ N\(AUTH_FAILED\) \]"
        assert re.search(refusal, charon_log)
    else:
        assert "received AUTHENTICATION_FAILED notify" in charon_log
    assert "IKE SA failed: auth-failed" in daemon.output_text()


# --- traffic --------------------------------------------------------------------


def test_ping_crosses_qsgw_userspace_to_strongswan_libipsec_tunnel(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
) -> None:
    keys = _random_keys(with_ppk=True)
    setup = Setup(proposals=HYBRID, ppk=True)
    # qsgw's own TUN + ESP-in-UDP data plane, charon's kernel-libipsec
    qsgw_left.data_plane = "userspace"
    daemon = _start_both(site_pair, qsgw_left, strongswan_right, setup, (keys, keys))
    daemon.initiate(CONNECTION)
    _assert_tunnel(daemon, strongswan_right, "qsgw_initiates", ppk=True)

    source, destination = site_pair.left.inner4, site_pair.right.inner4
    assert site_pair.left.namespace.link_exists("qsgw0")
    assert site_pair.left.namespace.ping(destination, source)

    # the echo requests and replies went through charon's Child SA
    theirs = _only_charon_sa(strongswan_right)
    (child,) = [c for c in theirs.child_sas if c.state == "INSTALLED"]
    assert child.encap
    assert child.packets_in >= 1 and child.packets_out >= 1
