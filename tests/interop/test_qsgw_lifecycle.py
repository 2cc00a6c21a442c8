"""qsgw against strongSwan 6.1 and Libreswan 5.2 beyond setting up: the
life of an IKE SA and its Child SAs.

qsgw runs in the left namespace, the peer in the right one, as in
test_qsgw_strongswan.py, whose helpers read and compare both sides. The
cases here: IKE SAs deleted by either side, a Child SA deleted by
strongSwan and created again in the same IKE SA, liveness checks each way
and a dead peer, a lost IKE fragment in each direction, an optional PPK
that falls back to NO_PPK_AUTH, crossing rekeys (collisions), repeated
rekeys of a hybrid IKE SA with a PPK over IPv6, childless IKE SAs with
strongSwan, and Libreswan asking for a Child SA from a childless qsgw.

Packets are dropped with nftables inside a namespace; nothing touches the
host. After a Child SA rekey charon lists the old Child SA for a few
seconds (its delete_rekeyed_delay), so only INSTALLED ones are compared.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from . import strongswan
from .netns import Namespace
from .peers import (
    IkeSaStatus,
    IkeSecret,
    LibreswanPeer,
    LibreswanPpk,
    LibreswanPsk,
    PpkSecret,
    SitePair,
    StrongswanPeer,
    wait_until,
)
from .qsgw_configs import QsgwConnection, QsgwGateway, QsgwSecrets, site_to_site
from .qsgw_daemon import QsgwDaemon
from .test_qsgw_libreswan import (
    _assert_pluto_has_the_same_childless_ike_sa,
    _pluto_connection,
    _pluto_ids,
)
from .test_qsgw_strongswan import (
    CONNECTION,
    ESP_HYBRID,
    HYBRID,
    PPK_ID,
    ROLES,
    X25519,
    Keys,
    _assert_no_secret_in_output,
    _assert_tunnel,
    _both_sas,
    _charon_secrets,
    _initiate,
    _installed_child,
    _random_keys,
)

pytestmark = [pytest.mark.interop, pytest.mark.netns, pytest.mark.timeout(60)]

HYBRID_KES = ("CURVE_25519", "ML_KEM_768")
NFT_TABLE = "qsgw_test"


# --- configuring both sides --------------------------------------------------


def _connections(
    pair: SitePair,
    family: int = 4,
    proposals: tuple[str, ...] = HYBRID,
    esp_proposals: tuple[str, ...] = ESP_HYBRID,
    ppk_id: str | None = None,
    with_child: bool = True,
) -> tuple[QsgwConnection, strongswan.ConnectionConfig]:
    """The mirror-image connection "net", qsgw's and charon's."""
    childless = "allow" if with_child else "force"
    ours = site_to_site(
        CONNECTION,
        pair.left,
        pair.right,
        family,
        proposals=proposals,
        esp_proposals=esp_proposals,
        with_child=with_child,
        childless=childless,
        ppk_id=ppk_id,
    )
    theirs = strongswan.site_to_site(
        CONNECTION,
        pair.right,
        pair.left,
        family,
        proposals=proposals,
        with_child=with_child,
        childless=childless,
        ppk_id=ppk_id,
    )
    children = tuple(
        replace(child, esp_proposals=esp_proposals) for child in theirs.children
    )
    return ours, replace(theirs, children=children)


def _start(
    pair: SitePair,
    gateway: QsgwGateway,
    charon: StrongswanPeer,
    connections: tuple[QsgwConnection, strongswan.ConnectionConfig],
    keys: Keys,
) -> QsgwDaemon:
    ours, theirs = connections
    charon.load([theirs], _charon_secrets(pair, keys))
    return gateway.start([ours], {CONNECTION: QsgwSecrets(keys.psk, keys.ppk)})


def _start_hybrid(
    pair: SitePair,
    gateway: QsgwGateway,
    charon: StrongswanPeer,
    role: str,
) -> QsgwDaemon:
    """Hybrid IKE SA and Child SA, up and checked on both sides."""
    keys = _random_keys(with_ppk=False)
    daemon = _start(pair, gateway, charon, _connections(pair), keys)
    _initiate(role, daemon, charon)
    _assert_tunnel(daemon, charon, role)
    return daemon


# --- reading both sides ------------------------------------------------------


def _charon_installed(theirs: IkeSaStatus) -> list[strongswan.ChildSaStatus]:
    return [child for child in theirs.child_sas if child.state == "INSTALLED"]


def _one_matching_sa_each(
    daemon: QsgwDaemon, charon: StrongswanPeer, old_spi: str
) -> bool:
    """Exactly one IKE SA and one Child SA on each side, the same SPIs, and
    OLD_SPI (an IKE SPIi or a Child SA inbound SPI of qsgw) gone."""
    ours, theirs = daemon.sas(), charon.list_sas()
    if len(ours) != 1 or len(theirs) != 1:
        return False
    sa, their_sa = ours[0], theirs[0]
    if len(sa["children"]) != 1 or len(their_sa.child_sas) != 1:
        return False
    (child,), (their_child,) = sa["children"], their_sa.child_sas
    spis = (sa["spi_i"], sa["spi_r"], child["inbound_spi"], child["outbound_spi"])
    their_spis = (
        their_sa.initiator_spi,
        their_sa.responder_spi,
        their_child.spi_out,
        their_child.spi_in,
    )
    states = (sa["state"], child["state"], their_sa.state, their_child.state)
    settled = states == ("ESTABLISHED", "INSTALLED", "ESTABLISHED", "INSTALLED")
    return settled and spis == their_spis and old_spi not in spis


def _child_replaced(daemon: QsgwDaemon, charon: StrongswanPeer, old: str) -> bool:
    """Both sides have one INSTALLED Child SA, mirrored, not the OLD one."""
    ours, theirs = daemon.established(), charon.established_ike_sas()
    if len(ours) != 1 or len(theirs) != 1:
        return False
    installed = [c for c in ours[0]["children"] if c["state"] == "INSTALLED"]
    their_installed = _charon_installed(theirs[0])
    if len(installed) != 1 or len(their_installed) != 1:
        return False
    spis = (installed[0]["inbound_spi"], installed[0]["outbound_spi"])
    their_spis = (their_installed[0].spi_out, their_installed[0].spi_in)
    return spis == their_spis and spis[0] != old


def _ike_replaced(daemon: QsgwDaemon, charon: StrongswanPeer, old: str) -> bool:
    """One IKE SA on each side, the same SPIs, and SPIi no longer OLD."""
    ours, theirs = daemon.sas(), charon.list_sas()
    if len(ours) != 1 or len(theirs) != 1:
        return False
    spis = (ours[0]["spi_i"], ours[0]["spi_r"])
    same = spis == (theirs[0].initiator_spi, theirs[0].responder_spi)
    return same and ours[0]["state"] == "ESTABLISHED" and spis[0] != old


# --- deleting ----------------------------------------------------------------


@pytest.mark.parametrize("deleter", ["qsgw_deletes", "strongswan_deletes"])
@pytest.mark.parametrize("role", ROLES)
def test_ike_sa_deleted_by_either_side_is_gone_from_both(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
    role: str,
    deleter: str,
) -> None:
    daemon = _start_hybrid(site_pair, qsgw_left, strongswan_right, role)
    ours, _theirs = _both_sas(daemon, strongswan_right)

    # INFORMATIONAL { D(IKE) } -->, <-- INFORMATIONAL { }
    if deleter == "qsgw_deletes":
        daemon.terminate_ike(ours["unique_id"])
    else:
        strongswan_right.terminate(CONNECTION)

    # RFC 7296 §1.4.1: deleting the IKE SA deletes its Child SAs too
    assert wait_until(lambda: daemon.sas() == [], timeout=10), daemon.sas()
    assert wait_until(lambda: strongswan_right.list_sas() == [], timeout=10)
    log = strongswan_right.log_text()
    if deleter == "qsgw_deletes":
        assert re.search(r"parsed INFORMATIONAL request \d+ \[ D \]", log)
        assert re.search(r"generating INFORMATIONAL response \d+ \[ \]", log)
    else:
        assert re.search(r"generating INFORMATIONAL request \d+ \[ D \]", log)
        assert re.search(r"parsed INFORMATIONAL response \d+ \[ \]", log)
    assert daemon.process is not None and daemon.process.running()


def test_child_sa_deleted_by_strongswan_is_recreated_in_the_same_ike_sa(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
) -> None:
    keys = _random_keys(with_ppk=False)
    connections = _connections(
        site_pair, proposals=X25519, esp_proposals=("aes256gcm16",)
    )
    daemon = _start(site_pair, qsgw_left, strongswan_right, connections, keys)
    daemon.initiate(CONNECTION)
    ours, _theirs = _assert_tunnel(daemon, strongswan_right, "qsgw_initiates")

    # INFORMATIONAL { D(ESP, SPI) } -->, <-- INFORMATIONAL { D(ESP, SPI) }
    with strongswan_right.session() as session:
        for _ in session.terminate({"child": CONNECTION, "timeout": 10000}):
            pass
    assert wait_until(lambda: daemon.established()[0]["children"] == [], timeout=10)
    # RFC 7296 §1.4.1: the response deletes the other direction's SA
    log = strongswan_right.log_text()
    assert re.search(r"parsed INFORMATIONAL response \d+ \[ D \]", log)
    (sa,) = daemon.established()
    assert sa["spi_i"] == ours["spi_i"]
    assert strongswan_right.established_ike_sas()[0].child_sas == ()

    # CREATE_CHILD_SA { SA, Ni, KEi, TSi, TSr } --> in the same IKE SA
    strongswan_right.initiate(child=CONNECTION)
    assert wait_until(lambda: bool(daemon.established()[0]["children"]), timeout=10)
    again, _theirs = _assert_tunnel(daemon, strongswan_right, "qsgw_initiates")
    assert again["spi_i"] == ours["spi_i"]
    assert (
        _installed_child(again)["inbound_spi"] != _installed_child(ours)["inbound_spi"]
    )


# --- liveness ----------------------------------------------------------------


def _empty_informationals(log: str, kind: str) -> int:
    """How many empty INFORMATIONAL messages of KIND charon parsed."""
    return len(re.findall(rf"parsed INFORMATIONAL {kind} \d+ \[ \]", log))


def _start_up(
    pair: SitePair,
    gateway: QsgwGateway,
    charon: StrongswanPeer,
    qsgw_settings: dict[str, str],
    charon_settings: dict[str, str],
) -> QsgwDaemon:
    """A hybrid tunnel set up by qsgw, each side with extra SETTINGS."""
    ours, theirs = _connections(pair)
    ours = replace(ours, extra=qsgw_settings)
    theirs = replace(theirs, extra=charon_settings)
    keys = _random_keys(with_ppk=False)
    daemon = _start(pair, gateway, charon, (ours, theirs), keys)
    daemon.initiate(CONNECTION)
    _assert_tunnel(daemon, charon, "qsgw_initiates")
    return daemon


def test_qsgw_liveness_checks_are_answered_and_a_stopped_charon_is_dead(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
) -> None:
    qsgw_dpd = {"dpd_delay": "1s", "dpd_timeout": "5s"}
    daemon = _start_up(site_pair, qsgw_left, strongswan_right, qsgw_dpd, {})

    # RFC 7296 §2.4: INFORMATIONAL { } -->, <-- INFORMATIONAL { }
    def checked_twice() -> bool:
        return _empty_informationals(strongswan_right.log_text(), "request") >= 2

    assert wait_until(checked_twice, timeout=10)
    assert len(daemon.established()) == 1

    # charon killed without a word (SIGTERM would send a Delete): no answer
    # after the retransmissions, so qsgw deletes the IKE SA
    assert strongswan_right.process is not None
    os.kill(strongswan_right.process.pid, signal.SIGKILL)
    assert wait_until(lambda: daemon.sas() == [], timeout=30), daemon.sas()
    assert "dead-peer" in daemon.output_text()


def test_strongswan_liveness_checks_are_answered_by_qsgw(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
) -> None:
    charon_dpd = {"dpd_delay": "1s"}
    daemon = _start_up(site_pair, qsgw_left, strongswan_right, {}, charon_dpd)
    before, _theirs = _both_sas(daemon, strongswan_right)

    # <-- INFORMATIONAL { }, INFORMATIONAL { } -->
    def answered_twice() -> bool:
        return _empty_informationals(strongswan_right.log_text(), "response") >= 2

    assert wait_until(answered_twice, timeout=10)
    after, _theirs = _assert_tunnel(daemon, strongswan_right, "qsgw_initiates")
    assert after["spi_i"] == before["spi_i"]


# --- a lost IKE fragment -----------------------------------------------------


def _drop_first_fragment(namespace: Namespace) -> None:
    """Drops the first big IKE fragment arriving in NAMESPACE (RFC 7383).

    An SKF payload (53) follows the IKE header on port 4500, whose 4-octet
    non-ESP marker puts the header's next payload at octet 8+4+16 of UDP.
    The quota lets one fragment of at most 1280 octets match, not two.
    """
    nft = ["nft", "add"]
    namespace.run([*nft, "table", "inet", NFT_TABLE])
    hook = "{ type filter hook input priority 0 ; }"
    namespace.run([*nft, "chain", "inet", NFT_TABLE, "input", hook])
    rule = "udp dport 4500 @th,224,8 53 meta length > 1000"
    rule += " quota until 1300 bytes counter drop"
    namespace.run([*nft, "rule", "inet", NFT_TABLE, "input", *rule.split()])


def _dropped_packets(namespace: Namespace) -> int:
    listing = namespace.run(["nft", "list", "table", "inet", NFT_TABLE])
    match = re.search(r"counter packets (\d+)", listing)
    assert match is not None, listing
    return int(match.group(1))


@pytest.mark.parametrize("role", ROLES)
def test_lost_ike_fragment_of_the_initiator_is_recovered_by_retransmission(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
    role: str,
) -> None:
    """The ML-KEM-768 IKE_INTERMEDIATE request goes in two fragments (its
    response fits in one): the responder loses the first one."""
    keys = _random_keys(with_ppk=False)
    connections = _connections(site_pair)
    daemon = _start(site_pair, qsgw_left, strongswan_right, connections, keys)
    responder = site_pair.right if role == "qsgw_initiates" else site_pair.left
    _drop_first_fragment(responder.namespace)

    # RFC 7383 §2.6: the whole message is retransmitted, all its fragments
    if role == "qsgw_initiates":
        daemon.initiate(CONNECTION, wait=30)
    else:
        strongswan_right.initiate(child=CONNECTION, ike=CONNECTION, timeout=30)

    _ours, theirs = _assert_tunnel(daemon, strongswan_right, role)
    assert theirs.key_exchanges == HYBRID_KES
    assert _dropped_packets(responder.namespace) == 1
    log = strongswan_right.log_text()
    if role == "qsgw_initiates":
        assert "received fragment #2 of 2, waiting for complete" in log
        assert "received fragment #1 of 2, reassembled" in log
    else:
        assert "retransmit 1 of request" in log


# --- PPK optional: NO_PPK_AUTH -----------------------------------------------


def test_optional_ppk_unknown_to_qsgw_falls_back_to_no_ppk_auth_of_strongswan(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
) -> None:
    """Each side has an optional PPK under its own PPK_ID; charon offers its
    own (as responder it refuses any other PPK_ID, even optional)."""
    keys = Keys(os.urandom(32), os.urandom(32))
    ours, theirs = _connections(site_pair, ppk_id="qsgw-only")
    ours = replace(ours, ppk_required=False)
    theirs = replace(theirs, ppk_id="charon-only", ppk_required=False)
    ids = (site_pair.left.identity, site_pair.right.identity)
    charon_ppk = PpkSecret("charon-only", os.urandom(32))
    strongswan_right.load([theirs], [IkeSecret(ids, keys.psk), charon_ppk])
    daemon = qsgw_left.start([ours], {CONNECTION: QsgwSecrets(keys.psk, keys.ppk)})

    # IKE_AUTH { IDi, AUTH(with PPK), ..., NO_PPK_AUTH, PPK_IDENTITY } -->
    strongswan_right.initiate(child=CONNECTION, ike=CONNECTION)

    # RFC 8784 §3: qsgw verifies NO_PPK_AUTH and uses no PPK
    _assert_tunnel(daemon, strongswan_right, "strongswan_initiates", ppk=False)
    log = strongswan_right.log_text()
    offer = r"generating IKE_AUTH request \d+ \[ [^]]*N\(NO_PPK\) N\(PPK_ID\) \]"
    assert re.search(offer, log)
    assert "peer didn't use PPK for PPK_ID 'charon-only'" in log
    _assert_no_secret_in_output(daemon, keys)


def test_optional_ppk_unknown_to_libreswan_falls_back_to_no_ppk_auth_of_qsgw(
    site_pair: SitePair, qsgw_left: QsgwGateway, libreswan_right: LibreswanPeer
) -> None:
    """qsgw offers an optional PPK that pluto, which permits PPKs, lacks."""
    psk, ppk = os.urandom(32), os.urandom(32)
    libreswan_right.start(
        [_pluto_connection(site_pair, ppk="permit")],
        [LibreswanPsk(_pluto_ids(site_pair), psk)],
    )
    ours = site_to_site(
        CONNECTION,
        site_pair.left,
        site_pair.right,
        with_child=False,
        childless="force",
        ppk_id="qsgw-only",
    )
    ours = replace(ours, ppk_required=False)
    daemon = qsgw_left.start([ours], {CONNECTION: QsgwSecrets(psk, ppk)})

    # IKE_AUTH { IDi, AUTH(with PPK), PPK_IDENTITY, NO_PPK_AUTH } -->
    daemon.initiate(CONNECTION)

    # RFC 8784 §3: pluto verifies NO_PPK_AUTH and uses no PPK
    assert wait_until(lambda: bool(daemon.established()), timeout=10)
    (sa,) = daemon.established()
    assert sa["ppk"] is False
    _assert_pluto_has_the_same_childless_ike_sa(libreswan_right, sa)
    log = libreswan_right.log_text()
    assert "N(PPK_IDENTITY),N(NO_PPK_AUTH)}" in log
    assert "NO_PPK_AUTH verified" in log


# --- rekey collisions --------------------------------------------------------


@contextlib.contextmanager
def _udp_4500_blocked(namespace: Namespace) -> Iterator[None]:
    """NAMESPACE drops what arrives on UDP 4500 while inside."""
    namespace.run(["nft", "add", "table", "inet", NFT_TABLE])
    hook = "{ type filter hook input priority 0 ; }"
    namespace.run(["nft", "add", "chain", "inet", NFT_TABLE, "input", hook])
    rule = ["udp", "dport", "4500", "drop"]
    namespace.run(["nft", "add", "rule", "inet", NFT_TABLE, "input", *rule])
    try:
        yield
    finally:
        namespace.run(["nft", "delete", "table", "inet", NFT_TABLE])


def _charon_saw_collision(what: str, log: str) -> bool:
    if what == "child_sa":
        return "detected rekey collision for CHILD_SA" in log
    return "detected IKE_REKEY collision with IKE_REKEY" in log


def _qsgw_answered_before_its_rekey_completed(output: str) -> bool:
    """qsgw answered charon's CREATE_CHILD_SA while its own was pending
    (which side's SA stays depends on the nonces, RFC 7296 §2.8.1)."""
    request = output.find("sending CREATE_CHILD_SA request")
    response = output.find("sending CREATE_CHILD_SA response")
    rekeyed = output.find(" rekeyed")
    return -1 < request < response < rekeyed


@pytest.mark.parametrize("what", ["child_sa", "ike_sa"])
def test_crossing_rekeys_leave_one_matching_sa_that_rekeys_again(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
    what: str,
) -> None:
    daemon = _start_hybrid(site_pair, qsgw_left, strongswan_right, "qsgw_initiates")
    ours, theirs = _both_sas(daemon, strongswan_right)
    old_child = _installed_child(ours)["inbound_spi"]

    # qsgw's request is lost, charon's reaches qsgw while qsgw waits for its
    # own answer, and qsgw's answer is lost; then qsgw's retransmission
    # reaches charon while charon waits: each side sees the collision
    with _udp_4500_blocked(site_pair.right.namespace):
        if what == "child_sa":
            daemon.rekey_child(_installed_child(ours)["unique_id"])
            strongswan_right.rekey_child(_charon_installed(theirs)[0].unique_id)
        else:
            daemon.rekey_ike(ours["unique_id"])
            strongswan_right.rekey_ike(theirs.unique_id)
        time.sleep(0.5)

    # RFC 7296 §2.8.1 / §2.8.2: the nonces pick one new SA, the other goes
    old = old_child if what == "child_sa" else ours["spi_i"]
    settled = wait_until(
        lambda: _one_matching_sa_each(daemon, strongswan_right, old), timeout=30
    )
    assert settled, (daemon.sas(), strongswan_right.list_sas())
    assert _charon_saw_collision(what, strongswan_right.log_text())
    assert _qsgw_answered_before_its_rekey_completed(daemon.output_text())

    # and a further rekey, by qsgw, still works
    ours, _theirs = _both_sas(daemon, strongswan_right)
    old_child = _installed_child(ours)["inbound_spi"]
    daemon.rekey_child(_installed_child(ours)["unique_id"])
    assert wait_until(
        lambda: _child_replaced(daemon, strongswan_right, old_child), timeout=10
    )


# --- repeated rekeys, hybrid with a PPK over IPv6 ----------------------------


def _rekey_and_wait(
    role: str, step: str, daemon: QsgwDaemon, charon: StrongswanPeer
) -> None:
    ours, theirs = _both_sas(daemon, charon)
    if step == "child_sa":
        old = _installed_child(ours)["inbound_spi"]
        if role == "qsgw_initiates":
            daemon.rekey_child(_installed_child(ours)["unique_id"])
        else:
            charon.rekey_child(_charon_installed(theirs)[0].unique_id)
        assert wait_until(lambda: _child_replaced(daemon, charon, old), timeout=10)
    else:
        old = ours["spi_i"]
        if role == "qsgw_initiates":
            daemon.rekey_ike(ours["unique_id"])
        else:
            charon.rekey_ike(theirs.unique_id)
        assert wait_until(lambda: _ike_replaced(daemon, charon, old), timeout=15)


@pytest.mark.parametrize("role", ROLES)
def test_alternating_rekeys_of_hybrid_ppk_sas_over_ipv6_keep_both_in_step(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
    role: str,
) -> None:
    keys = _random_keys(with_ppk=True)
    connections = _connections(site_pair, family=6, ppk_id=PPK_ID)
    daemon = _start(site_pair, qsgw_left, strongswan_right, connections, keys)
    _initiate(role, daemon, strongswan_right)
    ours, _theirs = _assert_tunnel(daemon, strongswan_right, role, ppk=True)
    assert ours["local_address"] == site_pair.left.outer6

    for step in ("child_sa", "ike_sa", "child_sa", "ike_sa", "child_sa"):
        _rekey_and_wait(role, step, daemon, strongswan_right)
        # the PPK stays in SK_d (RFC 8784 §3), ML-KEM in every rekey
        _ours, theirs = _assert_tunnel(daemon, strongswan_right, role, ppk=True)
        assert theirs.key_exchanges == HYBRID_KES
        assert _charon_installed(theirs)[0].key_exchanges == HYBRID_KES
    _assert_no_secret_in_output(daemon, keys)


# --- childless ---------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_childless_hybrid_ike_sa_with_strongswan(
    site_pair: SitePair,
    qsgw_left: QsgwGateway,
    strongswan_right: StrongswanPeer,
    role: str,
) -> None:
    keys = _random_keys(with_ppk=False)
    connections = _connections(site_pair, with_child=False)
    daemon = _start(site_pair, qsgw_left, strongswan_right, connections, keys)

    # RFC 6023: IKE_AUTH without SA, TSi, TSr
    if role == "qsgw_initiates":
        daemon.initiate(CONNECTION)
    else:
        strongswan_right.initiate(ike=CONNECTION)

    ours, theirs = _both_sas(daemon, strongswan_right)
    assert (ours["spi_i"], ours["spi_r"]) == (
        theirs.initiator_spi,
        theirs.responder_spi,
    )
    assert ours["children"] == [] and theirs.child_sas == ()
    assert theirs.key_exchanges == HYBRID_KES


def test_libreswan_asking_for_a_child_sa_gets_a_ppk_ike_sa_from_childless_qsgw(
    site_pair: SitePair, qsgw_left: QsgwGateway, libreswan_right: LibreswanPeer
) -> None:
    psk, ppk = os.urandom(32), os.urandom(32)
    ours = site_to_site(
        CONNECTION, site_pair.left, site_pair.right, with_child=False, ppk_id=PPK_ID
    )
    daemon = qsgw_left.start([ours], {CONNECTION: QsgwSecrets(psk, ppk)})
    pluto_ids = _pluto_ids(site_pair)
    libreswan_right.start(
        [_pluto_connection(site_pair, ppk="insist", ppk_ids=(PPK_ID,))],
        [LibreswanPsk(pluto_ids, psk), LibreswanPpk(pluto_ids, PPK_ID, ppk)],
    )

    # IKE_AUTH { IDi, AUTH, SA, TSi, TSr, PPK_IDENTITY } -->
    libreswan_right.initiate(CONNECTION, timeout=15)

    # RFC 7296 §1.2: no Child SA configured, so qsgw answers
    # TS_UNACCEPTABLE for the Child SA and keeps the IKE SA; so it does for
    # the CREATE_CHILD_SA pluto tries next
    assert wait_until(lambda: bool(daemon.established()), timeout=10)
    (sa,) = daemon.established()
    assert sa["initiator"] is False and sa["ppk"] is True
    assert sa["children"] == []
    log = libreswan_right.log_text
    refused = "CREATE_CHILD_SA failed with error notification TS_UNACCEPTABLE"
    assert wait_until(lambda: refused in log(), timeout=5)
    assert "IKE_AUTH response rejected Child SA with TS_UNACCEPTABLE" in log()
    assert "PPK AUTH calculated as initiator" in log()
    _assert_pluto_has_the_same_childless_ike_sa(libreswan_right, sa)

    # and a Delete from qsgw ends pluto's IKE SA
    def serials() -> set[int]:
        return {state.serial for state in libreswan_right.established_ike_sas()}

    before = serials()
    daemon.terminate_ike(sa["unique_id"])
    # pluto revives an IKE SA it initiated, with a new serial number
    assert wait_until(lambda: not before & serials(), timeout=10)
