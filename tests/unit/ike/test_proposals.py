"""swanctl-style proposal strings and the choice between proposal lists."""

import pytest

from qsgw.ike.constants import EncrId, EsnId, KeId, PrfId, TransformType
from qsgw.ike.payloads import Transform
from qsgw.ike.proposals import (
    ProposalError,
    additional_ke_methods,
    algorithm_names,
    check_chosen,
    describe,
    parse_esp_proposal,
    parse_ike_proposal,
    select_proposal,
    without_key_exchange,
)

HYBRID = "aes256gcm16-prfsha384-x25519-ke1_mlkem768"


def test_hybrid_ike_proposal_has_one_transform_per_role() -> None:
    p = parse_ike_proposal(HYBRID)
    assert p.transforms == (
        Transform(TransformType.ENCR, EncrId.ENCR_AES_GCM_16, 256),
        Transform(TransformType.PRF, PrfId.PRF_HMAC_SHA2_384),
        Transform(TransformType.KE, KeId.CURVE25519),
        Transform(TransformType.ADDKE1, KeId.ML_KEM_768),
    )


@pytest.mark.parametrize(
    "text",
    [
        HYBRID,
        "aes128-sha256-ecp256",
        "chacha20poly1305-prfsha512-x448-ke1_mlkem1024-ke2_none",
        "aes256gcm16-prfsha256-mlkem768",
    ],
)
def test_ike_proposal_written_back_parses_to_the_same(text: str) -> None:
    p = parse_ike_proposal(text)
    assert parse_ike_proposal(describe(p)) == p


def test_cbc_proposal_derives_its_prf_from_the_integrity_algorithm() -> None:
    p = parse_ike_proposal("aes128-sha384-modp3072")
    assert Transform(TransformType.PRF, PrfId.PRF_HMAC_SHA2_384) in p.transforms


def test_esp_proposal_defaults_to_no_esn() -> None:
    p = parse_esp_proposal("aes256gcm16")
    assert Transform(TransformType.ESN, EsnId.NO_ESN) in p.transforms


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("aes256gcm16-x25519", "needs a PRF"),
        ("aes256-x25519", "needs an integrity algorithm"),
        ("aes256gcm16-sha256-prfsha256-x25519", "takes no integrity"),
        ("aes256gcm16-prfsha256", "no key exchange method"),
        ("prfsha256-x25519", "no encryption algorithm"),
        (
            "aes256gcm16-prfsha256-x25519-ke8_mlkem768",
            "unknown algorithm 'ke8_mlkem768'",
        ),
        ("aes256gcm16--x25519", "empty algorithm name"),
        ("aes256gcm16-aes256-sha256-prfsha256-x25519", "separate proposals"),
        ("aes256gcm16-prfsha256-x25519-x25519", "appears twice"),
    ],
)
def test_bad_ike_proposal_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ProposalError, match=message):
        parse_ike_proposal(text)


def test_esp_proposal_refuses_a_prf() -> None:
    with pytest.raises(ProposalError, match="no PRF"):
        parse_esp_proposal("aes256gcm16-prfsha256")


def test_responder_picks_its_own_preference_from_the_intersection() -> None:
    ours = [parse_ike_proposal(HYBRID)]
    theirs = [
        parse_ike_proposal(
            "aes128gcm16-aes256gcm16-prfsha256-prfsha384-ecp256-x25519-ke1_mlkem768"
        )
    ]
    chosen = select_proposal(ours, theirs)
    assert chosen is not None
    assert describe(chosen) == HYBRID
    assert check_chosen(ours, chosen)


def test_optional_round_is_chosen_when_we_have_no_addke() -> None:
    ours = [parse_ike_proposal("aes256gcm16-prfsha384-x25519")]
    theirs = [parse_ike_proposal(HYBRID + "-ke1_none")]
    chosen = select_proposal(ours, theirs)
    assert chosen is not None
    assert additional_ke_methods(chosen) == []
    assert algorithm_names(chosen)["ke1"] == "none"


def test_mandatory_addke_without_match_is_no_proposal_chosen() -> None:
    ours = [parse_ike_proposal("aes256gcm16-prfsha384-x25519")]
    theirs = [parse_ike_proposal(HYBRID)]
    assert select_proposal(ours, theirs) is None


def test_initiator_refuses_a_choice_with_two_transforms_of_one_type() -> None:
    ours = [parse_ike_proposal("aes256gcm16-prfsha384-x25519-ecp256")]
    assert not check_chosen(ours, ours[0])


def test_initiator_refuses_a_choice_it_never_offered() -> None:
    ours = [parse_ike_proposal(HYBRID)]
    other = parse_ike_proposal("aes128gcm16-prfsha256-ecp256")
    assert not check_chosen(ours, other)


def test_child_offer_in_ike_auth_drops_pfs_methods() -> None:
    p = parse_esp_proposal("aes256gcm16-x25519-ke1_mlkem768-esn")
    assert describe(without_key_exchange(p)) == "aes256gcm16-esn"
