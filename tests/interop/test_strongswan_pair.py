"""Harness self-tests: strongSwan against strongSwan in two namespaces.

They need no qsgw. Each proves one thing the qsgw interop tests rely on:
the peers come up, the configuration reaches them, vici reports what was
negotiated on both sides, and traffic crosses the kernel-libipsec tunnel.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from vici.exception import CommandException

from .peers import (
    IkeSaStatus,
    IkeSecret,
    PpkSecret,
    SitePair,
    StrongswanPeer,
    wait_until,
)
from .strongswan import Secret, site_to_site

pytestmark = [pytest.mark.interop, pytest.mark.netns, pytest.mark.timeout(60)]

HYBRID = ("aes256gcm16-prfsha384-x25519-ke1_mlkem768",)
PPK_ID = "qsgw-ppk-1"


def _psk(pair: SitePair) -> IkeSecret:
    return IkeSecret((pair.left.identity, pair.right.identity), os.urandom(32))


def _only_established(peer: StrongswanPeer) -> IkeSaStatus:
    assert wait_until(lambda: bool(peer.established_ike_sas()), timeout=10)
    sas = peer.established_ike_sas()
    assert len(sas) == 1, sas
    return sas[0]


def _assert_same_ike_sa(left: IkeSaStatus, right: IkeSaStatus) -> None:
    assert left.initiator and not right.initiator
    assert (left.initiator_spi, left.responder_spi) == (
        right.initiator_spi,
        right.responder_spi,
    )
    assert left.responder_spi != "0000000000000000"


def _assert_ping_crosses_tunnel(
    pair: SitePair, left: StrongswanPeer, family: int
) -> None:
    for site in (pair.left, pair.right):
        assert site.namespace.link_exists("ipsec0"), site.namespace.name
    source, destination = pair.left.inner(family), pair.right.inner(family)
    assert pair.left.namespace.ping(destination, source)

    # the echo requests and replies were counted by the Child SA itself
    sa = _only_established(left)
    (child,) = [c for c in sa.child_sas if c.state == "INSTALLED"]
    assert child.packets_out >= 1 and child.packets_in >= 1


def _load_both(
    pair: SitePair,
    peers: tuple[StrongswanPeer, StrongswanPeer],
    secrets: tuple[list[Secret], list[Secret]],
    family: int = 4,
    proposals: tuple[str, ...] = ("aes256gcm16-prfsha384-x25519",),
    ppk_id: str | None = None,
) -> None:
    """Loads the mirror-image connection "net" into left and right."""
    left, right = peers
    to_right = site_to_site("net", pair.left, pair.right, family, proposals)
    to_left = site_to_site("net", pair.right, pair.left, family, proposals)
    if ppk_id is not None:
        to_right = replace(to_right, ppk_id=ppk_id, ppk_required=True)
        to_left = replace(to_left, ppk_id=ppk_id, ppk_required=True)
    left.load([to_right], secrets[0])
    right.load([to_left], secrets[1])


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_psk_x25519_sets_up_ike_and_child_sa_and_ping_crosses_tunnel(
    site_pair: SitePair,
    strongswan_pair: tuple[StrongswanPeer, StrongswanPeer],
    family: int,
) -> None:
    left, right = strongswan_pair
    psk: list[Secret] = [_psk(site_pair)]
    _load_both(site_pair, strongswan_pair, (psk, psk), family)

    left.initiate(child="net", ike="net")

    left_sa, right_sa = _only_established(left), _only_established(right)
    _assert_same_ike_sa(left_sa, right_sa)
    for sa in (left_sa, right_sa):
        assert sa.key_exchanges == ("CURVE_25519",)
        assert sa.encryption == "AES_GCM_16_256"
        assert not sa.ppk
        (child,) = sa.child_sas
        assert child.state == "INSTALLED" and child.encap
    (left_child,), (right_child,) = left_sa.child_sas, right_sa.child_sas
    assert (left_child.spi_in, left_child.spi_out) == (
        right_child.spi_out,
        right_child.spi_in,
    )
    _assert_ping_crosses_tunnel(site_pair, left, family)


def test_hybrid_x25519_mlkem768_with_required_ppk_sets_up_sa_and_ping_crosses(
    site_pair: SitePair, strongswan_pair: tuple[StrongswanPeer, StrongswanPeer]
) -> None:
    left, right = strongswan_pair
    secrets: list[Secret] = [_psk(site_pair), PpkSecret(PPK_ID, os.urandom(32))]
    _load_both(
        site_pair, strongswan_pair, (secrets, secrets), proposals=HYBRID, ppk_id=PPK_ID
    )

    left.initiate(child="net", ike="net")

    left_sa, right_sa = _only_established(left), _only_established(right)
    _assert_same_ike_sa(left_sa, right_sa)
    for sa in (left_sa, right_sa):
        # RFC 9370: X25519 in IKE_SA_INIT, ML-KEM-768 as ADDKE1
        assert sa.key_exchanges == ("CURVE_25519", "ML_KEM_768")
        # RFC 8784: keys derived with the PPK
        assert sa.ppk
    _assert_ping_crosses_tunnel(site_pair, left, 4)


def test_required_ppk_with_different_ppk_values_fails_authentication(
    site_pair: SitePair, strongswan_pair: tuple[StrongswanPeer, StrongswanPeer]
) -> None:
    left, right = strongswan_pair
    psk = _psk(site_pair)
    left_secrets: list[Secret] = [psk, PpkSecret(PPK_ID, os.urandom(32))]
    right_secrets: list[Secret] = [psk, PpkSecret(PPK_ID, os.urandom(32))]
    _load_both(
        site_pair,
        strongswan_pair,
        (left_secrets, right_secrets),
        proposals=HYBRID,
        ppk_id=PPK_ID,
    )

    with pytest.raises(CommandException):
        left.initiate(child="net", ike="net", timeout=10)

    # RFC 8784 §3: AUTH is computed with the PPK-modified SK_pi/SK_pr
    assert "received AUTHENTICATION_FAILED notify" in left.log_text()
    assert left.established_ike_sas() == []
    assert right.established_ike_sas() == []


def test_rekeying_ike_and_child_sa_replaces_their_spis(
    site_pair: SitePair, strongswan_pair: tuple[StrongswanPeer, StrongswanPeer]
) -> None:
    left, right = strongswan_pair
    psk: list[Secret] = [_psk(site_pair)]
    _load_both(site_pair, strongswan_pair, (psk, psk), proposals=HYBRID)
    left.initiate(child="net", ike="net")
    before = _only_established(left)
    (child_before,) = before.child_sas

    left.rekey_child(child_before.unique_id)
    assert wait_until(lambda: _replaced(_child_spis(left), child_before.spi_in), 10)
    left.rekey_ike(before.unique_id)
    assert wait_until(lambda: _replaced(_ike_spis(left), before.initiator_spi), 10)

    after_left, after_right = _only_established(left), _only_established(right)
    _assert_same_ike_sa(after_left, after_right)
    assert after_left.key_exchanges == ("CURVE_25519", "ML_KEM_768")
    _assert_ping_crosses_tunnel(site_pair, left, 4)


def _replaced(current: set[str], old: str) -> bool:
    """Exactly one SA left, and not the old one."""
    return len(current) == 1 and old not in current


def _child_spis(peer: StrongswanPeer) -> set[str]:
    return {
        child.spi_in
        for sa in peer.list_sas()
        for child in sa.child_sas
        if child.state == "INSTALLED"
    }


def _ike_spis(peer: StrongswanPeer) -> set[str]:
    return {sa.initiator_spi for sa in peer.established_ike_sas()}
