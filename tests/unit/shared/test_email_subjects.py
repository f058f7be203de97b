"""The subject rules read a subject as a mail client shows it (P-28)."""

from __future__ import annotations

import pytest

from shared import email_subjects


def _problems(subject: str) -> list[str]:
    return email_subjects.subject_problems(
        subject, security_notice=False, body_says=lambda _claim: False
    )


@pytest.mark.promise("P-28")
@pytest.mark.parametrize(
    ("subject", "problem"),
    [
        ("=?utf-8?q?Re=3A_Your_order_=23123?=", "fake reply or forward prefix"),
        ("=?UTF-8?B?UmU6IFlvdXIgb3JkZXI=?=", "fake reply or forward prefix"),  # base64
        ("=?utf-8?q?R?= =?utf-8?q?e=3A?= hi", "fake reply or forward prefix"),  # joined
        ("=?x-unknown?q?Fwd:?= hi", "fake reply or forward prefix"),  # read as ASCII
        ("=?utf-8?q?You_have_won_a_prize?=", "prize or winnings claim"),
        ("Your =?utf-8?q?in=76oice?= inside", "payment claim (iMT takes no payments)"),
    ],
)
def test_a_subject_written_as_encoded_words_is_judged_as_decoded(
    subject: str, problem: str
) -> None:
    """A title typed as an RFC 2047 encoded word leaves as ASCII; a client that decodes
    it shows the claim, so the rules must see it too."""
    assert _problems(subject) == [f"misleading subject: {problem}"]


@pytest.mark.parametrize("subject", ["Is 2+2=? A quiz", "=?", "Opening hours =?utf-8?q?"])
def test_text_that_only_looks_like_an_encoded_word_passes(subject: str) -> None:
    assert _problems(subject) == []


def test_an_encoded_word_of_nothing_is_an_empty_subject() -> None:
    assert _problems("=?utf-8?q??=") == ["subject is empty"]
