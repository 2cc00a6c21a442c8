"""Harness self-tests: strongSwan initiating childless IKE SAs to Libreswan.

Libreswan cannot install Child SAs on this host (no kernel ESP, no
userspace ESP), so IKE is tested with childless IKE SAs (RFC 6023):
strongSwan initiates with `childless = force` and pluto responds, or pluto
initiates with its test impairment omit_v2_ike_auth_child. With a PPK
(RFC 8784) only strongSwan initiates: that impairment crashed pluto 5.2
together with `ppk=insist`.
"""

from __future__ import annotations

import os

import pytest

from .peers import (
    IkeSaStatus,
    IkeSecret,
    LibreswanConnection,
    LibreswanPeer,
    LibreswanPpk,
    LibreswanPsk,
    PpkSecret,
    SitePair,
    StrongswanPeer,
    wait_until,
)
from .strongswan import site_to_site

pytestmark = [pytest.mark.interop, pytest.mark.netns, pytest.mark.timeout(60)]

PPK_ID = "qsgw-ppk-1"


def _pluto_connection(
    pair: SitePair, ppk: str | None = None, ppk_ids: tuple[str, ...] = ()
) -> LibreswanConnection:
    return LibreswanConnection(
        "net",
        left=pair.right.outer4,
        right=pair.left.outer4,
        leftid=f"@{pair.right.identity}",
        rightid=f"@{pair.left.identity}",
        ppk=ppk,
        ppk_ids=ppk_ids,
    )


def _pluto_ids(pair: SitePair) -> tuple[str, str]:
    return (f"@{pair.right.identity}", f"@{pair.left.identity}")


def _strongswan_established(peer: StrongswanPeer) -> IkeSaStatus:
    (sa,) = peer.established_ike_sas()
    assert sa.initiator
    assert sa.child_sas == ()
    # Libreswan 5.2 has no ML-KEM: Curve25519 (its dh31) alone
    assert sa.key_exchanges == ("CURVE_25519",)
    return sa


def _assert_pluto_has_the_same_childless_ike_sa(
    pluto: LibreswanPeer, sa: IkeSaStatus
) -> None:
    assert wait_until(lambda: bool(pluto.established_ike_sas()), timeout=10)
    states = pluto.states()
    assert [s.state for s in states] == ["ESTABLISHED_IKE_SA"], states
    assert (sa.initiator_spi, sa.responder_spi) in pluto.ike_spis_seen()


def test_childless_psk_ike_sa_between_strongswan_initiator_and_libreswan(
    site_pair: SitePair,
    strongswan_left: StrongswanPeer,
    libreswan_right: LibreswanPeer,
) -> None:
    psk = os.urandom(32)
    libreswan_right.start(
        [_pluto_connection(site_pair)], [LibreswanPsk(_pluto_ids(site_pair), psk)]
    )
    connection = site_to_site(
        "net", site_pair.left, site_pair.right, with_child=False, childless="force"
    )
    ids = (site_pair.left.identity, site_pair.right.identity)
    strongswan_left.load([connection], [IkeSecret(ids, psk)])

    strongswan_left.initiate(ike="net")

    sa = _strongswan_established(strongswan_left)
    assert not sa.ppk
    _assert_pluto_has_the_same_childless_ike_sa(libreswan_right, sa)


def test_childless_psk_ike_sa_initiated_by_libreswan_to_strongswan(
    site_pair: SitePair,
    strongswan_left: StrongswanPeer,
    libreswan_right: LibreswanPeer,
) -> None:
    psk = os.urandom(32)
    connection = site_to_site("net", site_pair.left, site_pair.right, with_child=False)
    ids = (site_pair.left.identity, site_pair.right.identity)
    strongswan_left.load([connection], [IkeSecret(ids, psk)])
    libreswan_right.start(
        [_pluto_connection(site_pair)], [LibreswanPsk(_pluto_ids(site_pair), psk)]
    )
    libreswan_right.impair("omit_v2_ike_auth_child")

    libreswan_right.initiate("net")

    (sa,) = strongswan_left.established_ike_sas()
    assert not sa.initiator and sa.child_sas == ()
    assert sa.key_exchanges == ("CURVE_25519",)
    states = libreswan_right.states()
    assert [s.state for s in states] == ["ESTABLISHED_IKE_SA"], states
    assert (sa.initiator_spi, sa.responder_spi) in libreswan_right.ike_spis_seen()


def test_childless_ike_sa_with_required_ppk_between_strongswan_and_libreswan(
    site_pair: SitePair,
    strongswan_left: StrongswanPeer,
    libreswan_right: LibreswanPeer,
) -> None:
    psk, ppk = os.urandom(32), os.urandom(32)
    pluto_ids = _pluto_ids(site_pair)
    libreswan_right.start(
        [_pluto_connection(site_pair, ppk="insist", ppk_ids=(PPK_ID,))],
        [LibreswanPsk(pluto_ids, psk), LibreswanPpk(pluto_ids, PPK_ID, ppk)],
    )
    connection = site_to_site(
        "net",
        site_pair.left,
        site_pair.right,
        with_child=False,
        childless="force",
        ppk_id=PPK_ID,
    )
    ids = (site_pair.left.identity, site_pair.right.identity)
    strongswan_left.load([connection], [IkeSecret(ids, psk), PpkSecret(PPK_ID, ppk)])

    strongswan_left.initiate(ike="net")

    sa = _strongswan_established(strongswan_left)
    assert sa.ppk
    _assert_pluto_has_the_same_childless_ike_sa(libreswan_right, sa)
    assert "PPK AUTH calculated as responder" in libreswan_right.log_text()
