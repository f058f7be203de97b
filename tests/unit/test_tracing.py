"""One trace id from the gateway's request id through the events a piece of work queues."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from shared.events import envelope_for
from shared.events.catalogue.accounts import ProfileUpdated
from shared.tracing import (
    current_traceparent,
    is_trace_id,
    trace_id_for_request,
    trace_id_of,
    trace_id_var,
    traced,
)

GATEWAY_ID = "4bf92f3577b34da6a3ce929d0e0e4736"  # nginx's $request_id: 32 hex digits
USER = "0192f5e4-6f1d-7c4a-9b1e-3a2b1c0d9e8f"


@pytest.fixture(autouse=True)
def _untraced() -> None:
    trace_id_var.set(None)  # each test runs in a context of its own: this stays here


def test_the_gateways_request_id_is_the_trace_id() -> None:
    assert trace_id_for_request(GATEWAY_ID) == GATEWAY_ID


def test_a_uuid_request_id_is_the_trace_id_without_dashes_or_capitals() -> None:
    assert trace_id_for_request("4BF92F35-77B3-4DA6-A3CE-929D0E0E4736") == GATEWAY_ID


@pytest.mark.parametrize(
    "sent",
    [
        None,
        "",
        "req-42",  # a client's own id that is not a W3C trace id
        "0" * 32,  # the W3C null trace id
        "4bf92f3577b34da6a3ce929d0e0e473",  # 31 digits
        "4bf92f3577b34da6a3ce929d0e0e4736a",  # 33 digits
        "abcd4111-1111-1111-1111-abcdabcdabcd",  # a UUID, but it holds a card number
    ],
)
def test_a_request_id_that_is_no_usable_trace_id_gets_a_new_one(sent: str | None) -> None:
    first, second = trace_id_for_request(sent), trace_id_for_request(sent)

    assert is_trace_id(first)
    assert is_trace_id(second)
    assert first != second  # new each time, not derived from what was sent
    assert sent is None or first != sent.replace("-", "").lower()


def test_the_gateways_id_is_kept_even_when_its_digits_pass_for_a_card_number() -> None:
    # Random hex holds a Luhn-valid run now and then: the access log must still match.
    assert trace_id_for_request("abcd4111111111111111abcdabcdabcd") == (
        "abcd4111111111111111abcdabcdabcd"
    )


def test_traceparent_carries_the_trace_id_with_a_new_span_each_time() -> None:
    assert current_traceparent() is None
    trace_id_var.set(GATEWAY_ID)

    first, second = current_traceparent(), current_traceparent()

    assert first is not None
    assert second is not None
    assert trace_id_of(first) == trace_id_of(second) == GATEWAY_ID
    assert first != second
    assert first.startswith(f"00-{GATEWAY_ID}-")
    assert first.endswith("-01")


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        f"01-{GATEWAY_ID}-00f067aa0ba902b7-01",  # a version we do not know
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # null trace id
        f"00-{GATEWAY_ID}-{'0' * 16}-01",  # null span id
        f"00-{GATEWAY_ID.upper()}-00f067aa0ba902b7-01",  # capitals are invalid
        f"00-{GATEWAY_ID}-00f067aa0ba902b7-01 ",
    ],
)
def test_a_malformed_traceparent_names_no_trace(value: str | None) -> None:
    assert trace_id_of(value) is None


def test_events_queued_under_a_trace_carry_it() -> None:
    event = ProfileUpdated(user_id=USER, fields=("name",))
    untraced = envelope_for(event, source="accounts", subject=USER)
    trace_id_var.set(GATEWAY_ID)
    inside = envelope_for(event, source="accounts", subject=USER)
    given = envelope_for(
        event, source="accounts", subject=USER, traceparent=f"00-{'a' * 32}-{'b' * 16}-01"
    )

    assert untraced.traceparent is None
    assert trace_id_of(inside.traceparent) == GATEWAY_ID
    assert ("traceparent", inside.traceparent.encode()) in inside.headers()  # type: ignore[union-attr]
    assert trace_id_of(given.traceparent) == "a" * 32  # an explicit one wins


@dataclass
class _Item:
    traceparent: str | None


def test_each_item_is_handled_under_its_own_trace_and_the_old_one_comes_back() -> None:
    other = "c" * 32
    trace_id_var.set(GATEWAY_ID)
    items = [_Item(f"00-{'a' * 32}-{'b' * 16}-01"), _Item(None), _Item(f"00-{other}-{'d' * 16}-01")]

    seen = [trace_id_var.get() for _ in traced(items)]

    assert seen == ["a" * 32, None, other]
    assert trace_id_var.get() == GATEWAY_ID
