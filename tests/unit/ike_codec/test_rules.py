"""Per-exchange payload rules: what each exchange may carry, checked first."""

from __future__ import annotations

from dataclasses import replace

import pytest
from ikecodec_support import SAMPLES, esp_proposal, header

from qsgw.ike.constants import ExchangeType, NotifyType
from qsgw.ike.errors import ProtocolError
from qsgw.ike.payloads import (
    EncryptedPayload,
    Message,
    NotifyPayload,
    Payload,
    SaPayload,
    UnknownPayload,
)
from qsgw.ike.rules import RULES, check_message

X = ExchangeType
S = SAMPLES
N = NotifyPayload


def message(
    exchange: ExchangeType,
    response: bool,
    payloads: list[Payload],
    encrypted: bool | None = None,
) -> Message:
    if encrypted is None:
        encrypted = exchange != X.IKE_SA_INIT
    return Message(header(exchange, response, 1), tuple(payloads), encrypted)


def violation(msg: Message) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        check_message(msg)
    return caught.value


ADDKE = N(NotifyType.ADDITIONAL_KEY_EXCHANGE, data=b"link")
ESP_SA = S["SA-ESP"]
VALID = {
    "init-request": (X.IKE_SA_INIT, False, [S["SA-IKE"], S["KE-mlkem768"], S["Nonce"]]),
    "init-response": (
        X.IKE_SA_INIT,
        True,
        [S["SA-ESP"], S["KE-mlkem768"], S["Nonce"], S["CERTREQ"], S["V"]],
    ),
    "auth-request": (
        X.IKE_AUTH,
        False,
        [S["IDi"], S["CERT"], S["CERTREQ"], S["AUTH"], ESP_SA, S["TSi"], S["TSr"]],
    ),
    "auth-request-eap-start": (
        X.IKE_AUTH,
        False,
        [S["IDi"], ESP_SA, S["TSi"], S["TSr"]],
    ),
    "auth-request-eap-round": (X.IKE_AUTH, False, [S["EAP"]]),
    "auth-request-childless": (X.IKE_AUTH, False, [S["IDi"], S["AUTH"]]),
    "auth-response": (
        X.IKE_AUTH,
        True,
        [S["IDr"], S["AUTH"], S["CP"], ESP_SA, S["TSi"], S["TSr"]],
    ),
    "auth-response-child-failed": (
        X.IKE_AUTH,
        True,
        [S["IDr"], S["AUTH"], N(NotifyType.TS_UNACCEPTABLE)],
    ),
    "create-child-request": (
        X.CREATE_CHILD_SA,
        False,
        [S["N-rekey-sa"], ESP_SA, S["Nonce"], S["KE-mlkem768"], S["TSi"], S["TSr"]],
    ),
    "rekey-ike-request": (
        X.CREATE_CHILD_SA,
        False,
        [S["SA-IKE-rekey"], S["Nonce"], S["KE-mlkem768"]],
    ),
    "create-child-response": (
        X.CREATE_CHILD_SA,
        True,
        [ESP_SA, S["Nonce"], S["TSi"], S["TSr"], ADDKE],
    ),
    "informational-empty": (X.INFORMATIONAL, False, []),
    "informational-delete": (X.INFORMATIONAL, False, [S["D-ESP"], S["D-IKE"]]),
    "informational-response": (X.INFORMATIONAL, True, [S["D-ESP"]]),
    "intermediate-request": (X.IKE_INTERMEDIATE, False, [S["KE-mlkem768"]]),
    "intermediate-response": (X.IKE_INTERMEDIATE, True, [S["KE-mlkem768"]]),
    "followup-request": (X.IKE_FOLLOWUP_KE, False, [S["KE-mlkem768"], ADDKE]),
    "followup-response": (X.IKE_FOLLOWUP_KE, True, [S["KE-mlkem768"]]),
}


@pytest.mark.parametrize("case", sorted(VALID))
def test_regular_message_passes(case: str) -> None:
    exchange, response, payloads = VALID[case]
    check_message(message(exchange, response, payloads))


def test_every_exchange_has_rules_for_both_directions() -> None:
    assert set(RULES) == {(x, r) for x in ExchangeType for r in (False, True)}


@pytest.mark.parametrize(
    ("exchange", "notify"),
    [
        (X.IKE_SA_INIT, NotifyType.COOKIE),
        (X.IKE_SA_INIT, NotifyType.INVALID_KE_PAYLOAD),
        (X.IKE_SA_INIT, NotifyType.NO_PROPOSAL_CHOSEN),
        (X.IKE_AUTH, NotifyType.AUTHENTICATION_FAILED),
        (X.CREATE_CHILD_SA, NotifyType.NO_PROPOSAL_CHOSEN),
        (X.CREATE_CHILD_SA, NotifyType.TEMPORARY_FAILURE),
        (X.IKE_INTERMEDIATE, NotifyType.INVALID_SYNTAX),
        (X.IKE_FOLLOWUP_KE, NotifyType.STATE_NOT_FOUND),
    ],
)
def test_error_response_of_notifies_only_passes(
    exchange: ExchangeType, notify: NotifyType
) -> None:
    check_message(message(exchange, True, [N(notify), S["V"]]))


def test_request_of_notifies_only_is_invalid() -> None:
    error = violation(message(X.IKE_SA_INIT, False, [N(NotifyType.COOKIE)]))
    assert (error.notify, error.reason) == (
        NotifyType.INVALID_SYNTAX,
        "missing-payload",
    )


@pytest.mark.parametrize(
    ("exchange", "response", "payloads", "reason"),
    [
        (X.IKE_SA_INIT, False, [S["SA-IKE"], S["Nonce"]], "missing-payload"),
        (
            X.IKE_SA_INIT,
            False,
            [S["SA-IKE"], S["KE-mlkem768"], S["Nonce"], S["Nonce"]],
            "repeated-payload",
        ),
        (
            X.IKE_SA_INIT,
            False,
            [S["SA-IKE"], S["KE-mlkem768"], S["Nonce"], S["AUTH"]],
            "unexpected-payload",
        ),
        (
            X.IKE_SA_INIT,
            True,
            [S["SA-IKE"], S["KE-mlkem768"], S["Nonce"]],
            "proposal-count",
        ),
        (X.IKE_AUTH, False, [S["IDi"], S["AUTH"], ESP_SA], "incomplete-payload-group"),
        (
            X.IKE_AUTH,
            False,
            [S["IDi"], S["AUTH"], S["TSi"], S["TSr"]],
            "incomplete-payload-group",
        ),
        (X.IKE_AUTH, False, [S["IDi"], S["IDi"], S["AUTH"]], "repeated-payload"),
        (X.IKE_AUTH, True, [S["IDi"], S["AUTH"]], "unexpected-payload"),
        (
            X.IKE_AUTH,
            False,
            [S["IDi"], S["AUTH"], S["KE-mlkem768"]],
            "unexpected-payload",
        ),
        (X.IKE_AUTH, False, [S["IDi"]] + [S["CERT"]] * 9, "repeated-payload"),
        (X.CREATE_CHILD_SA, False, [ESP_SA, S["TSi"], S["TSr"]], "missing-payload"),
        (
            X.CREATE_CHILD_SA,
            False,
            [ESP_SA, S["Nonce"], S["TSi"]],
            "incomplete-payload-group",
        ),
        (
            X.CREATE_CHILD_SA,
            True,
            [SaPayload((esp_proposal(1), esp_proposal(2))), S["Nonce"]],
            "proposal-count",
        ),
        (X.INFORMATIONAL, False, [S["SA-ESP"]], "unexpected-payload"),
        (
            X.IKE_INTERMEDIATE,
            False,
            [S["KE-mlkem768"], S["KE-mlkem768"]],
            "repeated-payload",
        ),
        (X.IKE_INTERMEDIATE, False, [S["IDi"]], "unexpected-payload"),
        (X.IKE_FOLLOWUP_KE, False, [S["KE-mlkem768"]], "missing-notify"),
        (X.IKE_FOLLOWUP_KE, False, [ADDKE], "missing-payload"),
    ],
    ids=[
        "init-without-ke",
        "init-two-nonces",
        "init-with-auth",
        "init-response-two-proposals",
        "auth-sa-without-ts",
        "auth-ts-without-sa",
        "auth-two-idi",
        "auth-response-with-idi",
        "auth-with-ke",
        "auth-nine-certs",
        "create-without-nonce",
        "create-tsi-without-tsr",
        "create-response-two-proposals",
        "informational-with-sa",
        "intermediate-two-ke",
        "intermediate-with-id",
        "followup-without-link",
        "followup-without-ke",
    ],
)
def test_violation_is_invalid_syntax(
    exchange: ExchangeType, response: bool, payloads: list[Payload], reason: str
) -> None:
    error = violation(message(exchange, response, payloads))
    assert (error.notify, error.reason) == (NotifyType.INVALID_SYNTAX, reason)


def test_notifies_vendor_ids_and_unknown_payloads_may_appear_freely() -> None:
    extra: list[Payload] = [S["N-status"]] * 30 + [S["V"]] * 10
    extra.append(UnknownPayload(200, b""))
    check_message(message(X.IKE_AUTH, False, [S["IDi"], S["AUTH"], *extra]))


@pytest.mark.parametrize("exchange", [x for x in ExchangeType if x != X.IKE_SA_INIT])
def test_encrypted_exchange_without_sk_is_dropped(exchange: ExchangeType) -> None:
    plain = message(exchange, False, [S["KE-mlkem768"]], encrypted=False)
    error = violation(plain)
    assert (error.notify, error.reason) == (None, "not-encrypted")


def test_encrypted_exchange_with_only_sk_passes_the_outer_check() -> None:
    outer = message(X.IKE_AUTH, False, [EncryptedPayload(35, b"\x00" * 40)], False)
    check_message(outer)


def test_payload_beside_sk_is_dropped() -> None:
    sk = EncryptedPayload(35, b"\x00" * 40)
    outer = message(X.IKE_AUTH, False, [S["Nonce"], sk], encrypted=False)
    assert violation(outer).reason == "unencrypted-payload"


def test_unknown_non_critical_payload_beside_sk_is_tolerated() -> None:
    sk = EncryptedPayload(35, b"\x00" * 40)
    outer = message(X.IKE_AUTH, False, [UnknownPayload(200, b""), sk], False)
    check_message(outer)


def test_sk_in_ike_sa_init_is_invalid() -> None:
    sk = EncryptedPayload(33, b"\x00" * 40)
    error = violation(message(X.IKE_SA_INIT, False, [sk]))
    assert error.reason == "unexpected-payload"


def test_unknown_exchange_is_dropped() -> None:
    msg = Message(replace(header(X.INFORMATIONAL), exchange=99), (), True)
    assert violation(msg).notify is None
