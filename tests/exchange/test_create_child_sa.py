"""CREATE_CHILD_SA: Child SA and IKE SA rekeying (RFC 7296 §1.3, §2.8),
additional key exchanges through IKE_FOLLOWUP_KE (RFC 9370 §2.2.4)."""

from __future__ import annotations

import pytest
from ike_peers import Link, child, connection, fingerprint

from qsgw.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaRekeyed,
    IkeSaDeleted,
    IkeSaRekeyed,
    MessageSent,
)


def _established(
    esp: str = "aes256gcm16",
    ike: str = "aes256gcm16-prfsha384-x25519",
    seeds: tuple[int, int] = (1, 2),
) -> Link:
    link = Link(
        connection(initiator=True, proposal=ike, children=(child(esp=esp),)),
        connection(
            initiator=False,
            proposal=ike,
            dpd_delay=0,
            children=(child(local=("10.2.0.0/16",), remote=("10.1.0.0/16",), esp=esp),),
        ),
        seeds=seeds,
    )
    link.initiate()
    link.run()
    return link


def _only_child(link: Link, side: str = "i") -> int:
    peer = link.i if side == "i" else link.r
    (sa,) = peer.engine.ike_sas()
    (info,) = sa.children
    return info.unique_id


def _rekeyed(link: Link) -> tuple[ChildSaRekeyed, ChildSaRekeyed]:
    (ri,) = link.i.of(ChildSaRekeyed)
    (rr,) = link.r.of(ChildSaRekeyed)
    assert isinstance(ri, ChildSaRekeyed) and isinstance(rr, ChildSaRekeyed)
    return ri, rr


@pytest.mark.parametrize(
    ("esp", "exchanges"),
    [
        ("aes256gcm16", ["CREATE_CHILD_SA"]),  # no PFS
        ("aes256gcm16-x25519", ["CREATE_CHILD_SA"]),  # PFS with KEi/KEr
        ("aes256gcm16-x25519-ke1_mlkem768", ["CREATE_CHILD_SA", "IKE_FOLLOWUP_KE"]),
    ],
    ids=["no-pfs", "pfs", "pfs-addke"],
)
def test_child_rekey_replaces_child_sa_and_deletes_old(
    esp: str, exchanges: list[str]
) -> None:
    link = _established(esp)
    old = _only_child(link)
    link.i.drain()
    before = len(link.i.seen)
    link.i.engine.rekey_child(old, link.now)
    # CREATE_CHILD_SA { N(REKEY_SA), SA, Ni, [KEi], TSi, TSr } -->
    # <-- CREATE_CHILD_SA { SA, Nr, [KEr], TSi, TSr, [N(ADDITIONAL_KEY_EXCHANGE)] }
    # [IKE_FOLLOWUP_KE { N(ADDITIONAL_KEY_EXCHANGE), KEi(1) } --> <-- { KEr(1) }]
    # INFORMATIONAL { D(ESP, old SPI) } --> <-- INFORMATIONAL { D(ESP, old SPI) }
    link.run()
    requests = [
        e.exchange
        for e in link.i.seen[before:]
        if isinstance(e, MessageSent) and not e.response
    ]
    assert requests == [*exchanges, "INFORMATIONAL"]
    ri, rr = _rekeyed(link)
    assert ri.old_child_sa == old
    assert fingerprint(ri.keys.encryption_key_out) == fingerprint(
        rr.keys.encryption_key_in
    )
    assert fingerprint(ri.keys.encryption_key_in) == fingerprint(
        rr.keys.encryption_key_out
    )
    first = link.i.of(ChildSaEstablished)[0]
    assert isinstance(first, ChildSaEstablished)
    assert fingerprint(ri.keys.encryption_key_out) != fingerprint(
        first.keys.encryption_key_out
    )
    assert len(link.i.of(ChildSaDeleted)) == len(link.r.of(ChildSaDeleted)) == 1
    (sa_i,) = link.i.engine.ike_sas()
    assert [c.unique_id for c in sa_i.children] == [ri.child_sa]
    assert sa_i.children[0].rekeys == 1


def test_pfs_rekey_runs_a_new_key_exchange() -> None:
    """With PFS the new KEYMAT includes g^ir (new): the same nonces could not
    reproduce it without the key exchange."""
    link = _established("aes256gcm16-x25519")
    link.i.engine.rekey_child(_only_child(link), link.now)
    link.run()
    (sa,) = link.i.engine.sas.values()
    (new_child,) = sa.children.values()
    assert new_child.proposal is not None
    assert any(t.type == 4 and t.id == 31 for t in new_child.proposal.transforms)


@pytest.mark.parametrize(
    "ike",
    ["aes256gcm16-prfsha384-x25519", "aes256gcm16-prfsha384-x25519-ke1_mlkem768"],
    ids=["x25519", "x25519-addke"],
)
def test_ike_rekey_moves_children_to_new_sa(ike: str) -> None:
    link = _established(ike=ike)
    (old,) = link.i.engine.ike_sas()
    link.i.engine.rekey_ike(old.unique_id, link.now)
    # CREATE_CHILD_SA { SA, Ni, KEi } --> <-- { SA, Nr, KEr }
    # INFORMATIONAL { D(IKE) } on the old IKE SA --> <-- { }
    link.run()
    (new_i,) = link.i.engine.ike_sas()
    (new_r,) = link.r.engine.ike_sas()
    assert new_i.unique_id != old.unique_id
    assert {new_i.spi_i, new_i.spi_r} == {new_r.spi_i, new_r.spi_r}
    assert new_i.spi_i != old.spi_i
    assert [c.unique_id for c in new_i.children] == [c.unique_id for c in old.children]
    assert new_i.rekeys == 1
    (rekeyed,) = link.i.of(IkeSaRekeyed)
    assert isinstance(rekeyed, IkeSaRekeyed) and rekeyed.old_ike_sa == old.unique_id
    assert not link.i.of(ChildSaDeleted) and not link.r.of(ChildSaDeleted)
    # the new IKE SA works: a Child SA rekey over it
    link.i.engine.rekey_child(new_i.children[0].unique_id, link.now)
    link.run()
    assert link.i.of(ChildSaRekeyed) and link.r.of(ChildSaRekeyed)


@pytest.mark.parametrize("seeds", [(1, 2), (3, 4), (5, 6), (7, 8)])
def test_simultaneous_child_rekey_keeps_exactly_one_new_child(
    seeds: tuple[int, int],
) -> None:
    link = _established(seeds=seeds)
    link.i.engine.rekey_child(_only_child(link, "i"), link.now)
    link.r.engine.rekey_child(_only_child(link, "r"), link.now)
    # both CREATE_CHILD_SA { N(REKEY_SA), ... } requests cross on the wire
    link.run()
    (sa_i,) = link.i.engine.ike_sas()
    (sa_r,) = link.r.engine.ike_sas()
    assert len(sa_i.children) == len(sa_r.children) == 1
    assert sa_i.children[0].inbound_spi == sa_r.children[0].outbound_spi
    assert sa_i.children[0].outbound_spi == sa_r.children[0].inbound_spi
    # the survivor is the exchange without the lowest nonce
    (survivor,) = link.i.engine.sas[sa_i.unique_id].children.values()
    # the old pair and the redundant new pair are gone on both ends
    assert len(link.i.of(ChildSaDeleted)) == len(link.r.of(ChildSaDeleted)) == 2
    reasons = [
        e.reason
        for e in link.i.of(ChildSaDeleted) + link.r.of(ChildSaDeleted)
        if isinstance(e, ChildSaDeleted)
    ]
    assert reasons.count("rekey-collision") == 1
    assert survivor.rekeys == 1


def test_child_rekey_collision_winner_depends_on_nonces() -> None:
    winners = set()
    for seeds in [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)]:
        link = _established(seeds=seeds)
        link.i.engine.rekey_child(_only_child(link, "i"), link.now)
        link.r.engine.rekey_child(_only_child(link, "r"), link.now)
        link.run()
        (sa,) = link.i.engine.sas.values()
        (survivor,) = sa.children.values()
        ni, nr = survivor.nonces
        assert min(ni, nr) > b""
        winners.add(survivor.initiator)
    # over these seeds each side's rekey wins at least once
    assert winners == {True, False}


@pytest.mark.parametrize("seeds", [(1, 2), (3, 4), (5, 6), (7, 8)])
def test_simultaneous_ike_rekey_keeps_exactly_one_new_ike_sa(
    seeds: tuple[int, int],
) -> None:
    link = _established(seeds=seeds)
    (sa_i,) = link.i.engine.ike_sas()
    (sa_r,) = link.r.engine.ike_sas()
    link.i.engine.rekey_ike(sa_i.unique_id, link.now)
    link.r.engine.rekey_ike(sa_r.unique_id, link.now)
    link.run()
    (new_i,) = link.i.engine.ike_sas()
    (new_r,) = link.r.engine.ike_sas()
    assert (new_i.spi_i, new_i.spi_r) == (new_r.spi_i, new_r.spi_r)
    assert len(new_i.children) == len(new_r.children) == 1
    assert link.i.of(IkeSaDeleted)


def test_rekey_timer_rekeys_child_before_its_lifetime() -> None:
    short = child(rekey_time=100, life_time=200)
    link = Link(
        connection(initiator=True, children=(short,)),
        connection(initiator=False, dpd_delay=0),
    )
    link.initiate()
    link.run()
    link.advance(100.0)
    link.run()
    assert link.i.of(ChildSaRekeyed)


def test_child_rekey_retries_after_invalid_ke_payload() -> None:
    link = Link(
        connection(initiator=True, children=(child(esp="aes256gcm16-x25519-ecp256"),)),
        connection(
            initiator=False,
            dpd_delay=0,
            children=(
                child(
                    local=("10.2.0.0/16",),
                    remote=("10.1.0.0/16",),
                    esp="aes256gcm16-ecp256",
                ),
            ),
        ),
    )
    link.initiate()
    link.run()
    link.i.drain()
    before = len(link.i.seen)
    link.i.engine.rekey_child(_only_child(link), link.now)
    # CREATE_CHILD_SA { N(REKEY_SA), SA, Ni, KEi(x25519), TSi, TSr } -->
    # <-- CREATE_CHILD_SA { N(INVALID_KE_PAYLOAD, ecp256) }
    # CREATE_CHILD_SA { N(REKEY_SA), SA, Ni, KEi(ecp256), TSi, TSr } --> <-- ...
    link.run()
    requests = [
        e.exchange
        for e in link.i.seen[before:]
        if isinstance(e, MessageSent) and not e.response
    ]
    assert requests == ["CREATE_CHILD_SA", "CREATE_CHILD_SA", "INFORMATIONAL"]
    ri, _ = _rekeyed(link)
    (info,) = link.i.engine.ike_sas()[0].children
    assert info.algorithms["ke"] == "ecp256"
    assert info.unique_id == ri.child_sa


def test_ike_rekey_timer_rekeys_ike_sa() -> None:
    link = Link(
        connection(initiator=True, rekey_time=1000, dpd_delay=0),
        connection(initiator=False, rekey_time=0, dpd_delay=0),
    )
    link.initiate()
    link.run()
    (old,) = link.i.engine.ike_sas()
    assert old.rekey_time is not None and 900 <= old.rekey_time <= 1000
    link.advance(1000.0)
    link.run()
    (new,) = link.i.engine.ike_sas()
    assert new.unique_id != old.unique_id and new.rekeys == 1


def test_soft_expiry_from_data_plane_rekeys_and_hard_expiry_deletes() -> None:
    link = _established()
    (info,) = link.i.engine.ike_sas()[0].children
    link.i.engine.child_expired(int(info.inbound_spi, 16), hard=False, now=link.now)
    link.run()
    assert link.i.of(ChildSaRekeyed)
    (new,) = link.i.engine.ike_sas()[0].children
    link.i.engine.child_expired(int(new.inbound_spi, 16), hard=True, now=link.now)
    link.run()
    assert link.i.engine.ike_sas()[0].children == []
    assert link.r.engine.ike_sas()[0].children == []


def test_replaced_child_sa_is_deleted_by_responder_when_delete_is_lost() -> None:
    link = _established()
    link.i.engine.rekey_child(_only_child(link), link.now)
    link.step()  # CREATE_CHILD_SA { N(REKEY_SA), SA, Ni, TSi, TSr } -->
    link.step()  # <-- CREATE_CHILD_SA { SA, Nr, TSi, TSr }
    # INFORMATIONAL { D(ESP, old SPI) } --> lost, and its retransmission
    assert len(link.take()) == 1
    link.advance(4.0)
    assert len(link.take()) == 1
    link.advance(1.0)
    # <-- INFORMATIONAL { D(ESP, old SPI) } from the responder, after 5 s
    link.run()
    (sa_i,) = link.i.engine.ike_sas()
    (sa_r,) = link.r.engine.ike_sas()
    assert len(sa_i.children) == len(sa_r.children) == 1
    deleted = [e for e in link.r.of(ChildSaDeleted) if isinstance(e, ChildSaDeleted)]
    assert [e.reason for e in deleted] == ["rekeyed"]
