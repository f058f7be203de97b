"""What an Idempotency-Key is bound to: the route and the body, never their spelling."""

from __future__ import annotations

import json
import re

from pydantic import BaseModel

from shared.service.idempotency import KEY_PATTERN, REPLAYED_HEADER, Replayed, fingerprint


class Body(BaseModel):
    title: str
    user_ids: list[str] = []


def test_the_same_request_has_the_same_fingerprint() -> None:
    one = fingerprint("POST /x", Body(title="a", user_ids=["1"]))
    assert one == fingerprint("POST /x", Body.model_validate({"user_ids": ["1"], "title": "a"}))


def test_another_route_or_body_has_another() -> None:
    one = fingerprint("POST /operator/requests/1/replies", Body(title="a"))
    assert one != fingerprint("POST /operator/requests/2/replies", Body(title="a"))
    assert one != fingerprint("POST /operator/requests/1/replies", Body(title="b"))
    assert one != fingerprint("POST /operator/requests/1/replies", None)


def test_keys_are_printable_and_of_a_sane_length() -> None:
    accepted = ["0b7e2f4a-3c1d-4e5f-8a9b-1c2d3e4f5a6b", "01HZY3Q8V4K9", "x" * 128]
    refused = ["short", "has spaces", "x" * 129, "tab\there!", "naïve-key-1"]
    assert all(re.match(KEY_PATTERN, key) for key in accepted)
    assert not any(re.match(KEY_PATTERN, key) for key in refused)


def test_a_replay_answers_what_was_recorded_or_the_thing_as_it_stands() -> None:
    replayed = Replayed(201, {"id": "7"})
    recorded, current = replayed.response(), replayed.response({"id": "7", "text": "now"})
    assert (recorded.status_code, json.loads(bytes(recorded.body))) == (201, {"id": "7"})
    assert (current.status_code, json.loads(bytes(current.body))) == (
        201,
        {"id": "7", "text": "now"},
    )
    assert recorded.headers[REPLAYED_HEADER] == current.headers[REPLAYED_HEADER] == "true"
