"""Reading an unsubscribe request from the subject of a reply to our mailto."""

import pytest

from services.notifier.domain.unsubscribe import MailedRequest, mailed_request

TOKEN = "AQMx" + "a" * 40 + "_-Z9"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (f"unsubscribe {TOKEN}", MailedRequest(TOKEN, everything=False)),
        (f"Re: Unsubscribe {TOKEN}", MailedRequest(TOKEN, everything=False)),
        (f'"unsubscribe all {TOKEN}"', MailedRequest(TOKEN, everything=True)),
        (f"UNSUBSCRIBE ALL {TOKEN} please", MailedRequest(TOKEN, everything=True)),
        ("unsubscribe", None),  # the old mailto's bare subject: nothing to act on
        ("unsubscribe me please", None),  # words, not a token
        (f"subscribe {TOKEN}", None),
        ("", None),
    ],
)
def test_the_token_and_whether_all_email_is_meant(
    subject: str, expected: MailedRequest | None
) -> None:
    assert mailed_request(subject) == expected
