"""qsgw against a real Libreswan 5.2, with childless IKE SAs (RFC 6023).

qsgw runs in the left namespace, pluto in the right one. Libreswan cannot
install Child SAs on this host (no kernel ESP, no userspace ESP), so IKE is
tested with childless IKE SAs: qsgw initiates with `childless: force`, or
pluto initiates with its test impairment omit_v2_ike_auth_child (not with a
PPK: that combination crashed pluto 5.2). Libreswan 5.2 has no ML-KEM, so
the key exchange is X25519 (its `dh31`).

qsgw runs with the recording data plane (the host kernel has no ESP); with
no Child SA nothing is installed anyway. Both sides are read: qsgw through
`qsgw sas --json`, pluto through `whack --showstates` and the IKE headers
its debug log dumps (pluto 5.2 shows no IKE SPIs in any status command).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from .peers import (
    LibreswanConnection,
    LibreswanPeer,
    LibreswanPpk,
    LibreswanPsk,
    SitePair,
    wait_until,
)
from .qsgw_configs import QsgwGateway, QsgwSecrets, site_to_site
from .qsgw_daemon import QsgwDaemon

pytestmark = [pytest.mark.interop, pytest.mark.netns, pytest.mark.timeout(60)]

PPK_ID = "qsgw-ppk-1"
CONNECTION = "net"
NO_SPI = "0000000000000000"


def _pluto_connection(
    pair: SitePair, ppk: str | None = None, ppk_ids: tuple[str, ...] = ()
) -> LibreswanConnection:
    """pluto's side: right is "left" in its own words."""
    return LibreswanConnection(
        CONNECTION,
        left=pair.right.outer4,
        right=pair.left.outer4,
        leftid=f"@{pair.right.identity}",
        rightid=f"@{pair.left.identity}",
        ppk=ppk,
        ppk_ids=ppk_ids,
    )


def _pluto_ids(pair: SitePair) -> tuple[str, str]:
    return (f"@{pair.right.identity}", f"@{pair.left.identity}")


def _start_qsgw(
    pair: SitePair,
    gateway: QsgwGateway,
    secrets: QsgwSecrets,
    childless: str,
    ppk_id: str | None = None,
) -> QsgwDaemon:
    connection = site_to_site(
        CONNECTION,
        pair.left,
        pair.right,
        with_child=False,
        childless=childless,
        ppk_id=ppk_id,
    )
    return gateway.start([connection], {CONNECTION: secrets})


def _qsgw_established(daemon: QsgwDaemon) -> list[dict[str, Any]]:
    return [sa for sa in daemon.sas() if sa["state"] == "ESTABLISHED"]


def _only_qsgw_sa(daemon: QsgwDaemon, initiator: bool) -> dict[str, Any]:
    assert wait_until(lambda: bool(_qsgw_established(daemon)), timeout=10)
    (sa,) = _qsgw_established(daemon)
    assert sa["initiator"] is initiator
    assert sa["children"] == []
    assert NO_SPI not in (sa["spi_i"], sa["spi_r"])
    # Libreswan 5.2 has no ML-KEM: X25519 alone, no additional exchange
    algorithms = sa["algorithms"]
    assert algorithms["ke"] == "x25519"
    assert not any(key.startswith("ke") and key != "ke" for key in algorithms)
    assert (algorithms["encr"], algorithms["prf"]) == ("aes256gcm16", "prfsha384")
    return sa


def _assert_pluto_has_the_same_childless_ike_sa(
    pluto: LibreswanPeer, sa: dict[str, Any]
) -> None:
    assert wait_until(lambda: bool(pluto.established_ike_sas()), timeout=10)
    states = pluto.states()
    assert [s.state for s in states] == ["ESTABLISHED_IKE_SA"], states
    assert (sa["spi_i"], sa["spi_r"]) in pluto.ike_spis_seen()


def test_childless_psk_ike_sa_initiated_by_qsgw_to_libreswan(
    site_pair: SitePair, qsgw_left: QsgwGateway, libreswan_right: LibreswanPeer
) -> None:
    psk = os.urandom(32)
    libreswan_right.start(
        [_pluto_connection(site_pair)], [LibreswanPsk(_pluto_ids(site_pair), psk)]
    )
    daemon = _start_qsgw(site_pair, qsgw_left, QsgwSecrets(psk), "force")

    daemon.initiate(CONNECTION)

    sa = _only_qsgw_sa(daemon, initiator=True)
    assert sa["ppk"] is False
    _assert_pluto_has_the_same_childless_ike_sa(libreswan_right, sa)


def test_childless_ike_sa_with_required_ppk_initiated_by_qsgw_to_libreswan(
    site_pair: SitePair, qsgw_left: QsgwGateway, libreswan_right: LibreswanPeer
) -> None:
    psk, ppk = os.urandom(32), os.urandom(32)
    pluto_ids = _pluto_ids(site_pair)
    libreswan_right.start(
        [_pluto_connection(site_pair, ppk="insist", ppk_ids=(PPK_ID,))],
        [LibreswanPsk(pluto_ids, psk), LibreswanPpk(pluto_ids, PPK_ID, ppk)],
    )
    secrets = QsgwSecrets(psk, ppk)
    daemon = _start_qsgw(site_pair, qsgw_left, secrets, "force", ppk_id=PPK_ID)

    daemon.initiate(CONNECTION)

    # RFC 8784: both sides derived SK_d, SK_pi and SK_pr with the PPK
    sa = _only_qsgw_sa(daemon, initiator=True)
    assert sa["ppk"] is True
    _assert_pluto_has_the_same_childless_ike_sa(libreswan_right, sa)
    assert "PPK AUTH calculated as responder" in libreswan_right.log_text()


def test_childless_ike_sa_with_wrong_ppk_is_refused_by_libreswan(
    site_pair: SitePair, qsgw_left: QsgwGateway, libreswan_right: LibreswanPeer
) -> None:
    psk = os.urandom(32)
    pluto_ids = _pluto_ids(site_pair)
    libreswan_right.start(
        [_pluto_connection(site_pair, ppk="insist", ppk_ids=(PPK_ID,))],
        [LibreswanPsk(pluto_ids, psk), LibreswanPpk(pluto_ids, PPK_ID, os.urandom(32))],
    )
    secrets = QsgwSecrets(psk, os.urandom(32))
    daemon = _start_qsgw(site_pair, qsgw_left, secrets, "force", ppk_id=PPK_ID)

    result = daemon.try_cli("initiate", "--conn", CONNECTION, "--wait", "10")

    # RFC 7296 §2.21.2: the responder answers AUTHENTICATION_FAILED
    assert result.returncode == 1, result
    assert "IKE SA failed: auth-failed" in daemon.output_text()
    assert wait_until(lambda: daemon.sas() == [], timeout=5), daemon.sas()
    assert wait_until(lambda: libreswan_right.states() == [], timeout=5)
    log = libreswan_right.log_text()
    assert "PPK AUTH calculated as responder" in log
    assert "with encrypted notification AUTHENTICATION_FAILED" in log
    assert daemon.try_cli("sas", "--json").returncode == 0


def test_childless_psk_ike_sa_initiated_by_libreswan_to_qsgw(
    site_pair: SitePair, qsgw_left: QsgwGateway, libreswan_right: LibreswanPeer
) -> None:
    psk = os.urandom(32)
    daemon = _start_qsgw(site_pair, qsgw_left, QsgwSecrets(psk), "allow")
    libreswan_right.start(
        [_pluto_connection(site_pair)], [LibreswanPsk(_pluto_ids(site_pair), psk)]
    )
    libreswan_right.impair("omit_v2_ike_auth_child")

    libreswan_right.initiate(CONNECTION)

    sa = _only_qsgw_sa(daemon, initiator=False)
    assert sa["ppk"] is False
    _assert_pluto_has_the_same_childless_ike_sa(libreswan_right, sa)
