"""The compliance gate: every shipped template passes it; misleading mail does not."""

from __future__ import annotations

import dataclasses
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from markupsafe import escape

from services.notifier.config import NotifierSettings
from services.notifier.domain import compliance
from services.notifier.domain.compliance import OutgoingEmail
from services.notifier.domain.templates import TEMPLATES, Footer, RenderedEmail, Renderer
from services.notifier.mailer import build_message, gate_policy

SETTINGS = NotifierSettings(environment="test")
POLICY = gate_policy(SETTINGS)
URL = "https://localhost:8443/api/notifier/unsubscribe/AbCdEfGhIjKlMnOpQrStUvWxYz"
PARAMS = {
    "verify_url": "https://localhost:8443/verify/abc",
    "consent_url": "https://localhost:8443/consent/abc",
    "cancel_url": "https://localhost:8443/cancel/abc",
    "reset_url": "https://localhost:8443/reset-password#token=abc",
    "request_id": "3f1c",
    "subject": "New opening hours",
    "message": "We now open at 9.",
    "headline": "Spring tune-up",
    "policy_version": "2",
    "summary": "Shorter retention.",
    "effective_at": "2025-01-01",
    "title": "Password reset needed",
    "account_state": "unconfirmed",
}


def render(template: str, category: str, **params: str) -> OutgoingEmail:
    rendered = Renderer().email(
        template,
        category=category,
        params={**PARAMS, **params},
        name="Ada <b>",
        unsubscribe_url=URL,
        footer=Footer(
            SETTINGS.notifier_public_base_url,
            SETTINGS.notifier_postal_address,
            SETTINGS.notifier_ad_label,
        ),
    )
    return outgoing(category, rendered)


def outgoing(category: str, rendered: RenderedEmail) -> OutgoingEmail:
    """A rendered email as the sender hands it to the gate, to the test's address."""
    return OutgoingEmail(
        category=category,
        sender=(
            SETTINGS.notifier_from_marketing
            if category == "marketing"
            else SETTINGS.notifier_from_transactional
        ),
        reply_to=SETTINGS.notifier_reply_to,
        to="ada@example.org",
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        unsubscribe_url=URL,
        headers={
            "List-Unsubscribe": f"<{URL}>, <mailto:service@phonedoctorbiz.com?subject=unsubscribe>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": SETTINGS.notifier_list_id,
        },
    )


@pytest.mark.parametrize(
    ("template", "category"),
    [(name, sorted(spec.categories)[0]) for name, spec in TEMPLATES.items()],
)
def test_every_shipped_template_passes_the_gate(template: str, category: str) -> None:
    email = render(template, category)
    assert compliance.check(email, POLICY) == []
    assert URL in email.text[-300:]
    assert "Ada &lt;b&gt;" in email.html  # HTML is autoescaped


def test_marketing_carries_label_and_postal_address() -> None:
    email = render("marketing_newsletter", "marketing")
    assert email.text.startswith("ADVERTISEMENT")
    assert SETTINGS.notifier_postal_address in email.text
    assert SETTINGS.notifier_postal_address in email.html


@pytest.mark.parametrize(
    "subject",
    ["RE: your account", "Fwd: hello", "fw: news", "  Re[2]: follow-up", "You have WON a prize"],
)
def test_fake_reply_forward_and_prize_subjects_are_refused(subject: str) -> None:
    reasons = compliance.check(
        render("service_announcement", "service_announcement", subject=subject), POLICY
    )
    assert any("misleading subject" in r for r in reasons)


def test_claims_need_the_body_to_support_them() -> None:
    unsupported = render("marketing_newsletter", "marketing", subject="Free screen repair")
    supported = render(
        "marketing_newsletter",
        "marketing",
        subject="Free screen check",
        message="A free screen check in every shop this week.",
    )
    assert "misleading subject: free offer not in the body" in compliance.check(unsupported, POLICY)
    assert compliance.check(supported, POLICY) == []


def test_urgency_is_only_for_security_notices() -> None:
    announcement = render(
        "service_announcement",
        "service_announcement",
        subject="Urgent: new hours",
        message="Urgent: new hours.",
    )
    incident = render("incident", "account_security", title="Urgent", message="Urgent: reset.")
    assert any("urgency" in r for r in compliance.check(announcement, POLICY))
    assert compliance.check(incident, POLICY) == []


def test_marketing_without_label_or_address_is_refused() -> None:
    email = render("marketing_newsletter", "marketing")
    bare = dataclasses.replace(
        email,
        text=email.text.replace("ADVERTISEMENT", "").replace("Advertisement", ""),
        html=email.html.replace(SETTINGS.notifier_postal_address, ""),
    )
    reasons = compliance.check(bare, POLICY)
    assert "marketing email is not labelled as an advertisement" in reasons
    assert "marketing email lacks the business's postal address" in reasons


@pytest.mark.promise("P-30")
@pytest.mark.promise("P-29")
@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_label_or_postal_address_labels_nothing(blank: str) -> None:
    """Blank text is found in any email: neither in the settings nor at the gate does it
    stand for a label or an address (the email carries neither)."""
    email = _marketing_with(blank, blank)
    policy = dataclasses.replace(POLICY, postal_address=blank, ad_label=blank)
    reasons = compliance.check(email, policy)
    assert "marketing email is not labelled as an advertisement" in reasons
    assert "marketing email lacks the business's postal address" in reasons
    for setting in ("notifier_postal_address", "notifier_ad_label"):
        with pytest.raises(ValueError, match=setting):
            NotifierSettings.model_validate({"environment": "test", setting: blank})


def _marketing_with(postal_address: str, ad_label: str) -> OutgoingEmail:
    footer = Footer(SETTINGS.notifier_public_base_url, postal_address, ad_label)
    rendered = Renderer().email(
        "marketing_newsletter",
        category="marketing",
        params=PARAMS,
        name="Ada",
        unsubscribe_url=URL,
        footer=footer,
    )
    return dataclasses.replace(
        render("marketing_newsletter", "marketing"),
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
    )


@pytest.mark.promise("P-30")
@pytest.mark.parametrize(
    ("postal_address", "ad_label"),
    [
        ("Phone Doctor & Co, 100 Main Street, Springfield", "Advertisement"),
        ("Phone Doctor <HQ>, 100 Main Street, Springfield", "Advertisement"),
        ("Unit 3 > 2, Main Street,\n  Springfield", "Ad & offer"),
    ],
)
def test_a_postal_address_or_label_the_html_escapes_still_passes_the_gate(
    postal_address: str, ad_label: str
) -> None:
    """The HTML part prints "&" as "&amp;": the gate reads it as the reader sees it."""
    policy = dataclasses.replace(POLICY, postal_address=postal_address, ad_label=ad_label)
    email = _marketing_with(postal_address, ad_label)
    assert "&amp;" in email.html or "&lt;" in email.html or "&gt;" in email.html
    assert compliance.check(email, policy) == []
    escaped = str(escape(postal_address))
    without = dataclasses.replace(email, html=email.html.replace(escaped, "elsewhere"))
    assert compliance.check(without, policy) == [
        "marketing email lacks the business's postal address"
    ]


def test_missing_unsubscribe_headers_and_footer_are_refused() -> None:
    email = render("request_reply", "transactional")
    stripped = dataclasses.replace(
        email, headers={}, text=email.text.replace(URL, ""), html=email.html.replace(URL, "")
    )
    reasons = compliance.check(stripped, POLICY)
    assert "List-Unsubscribe must be <https://...>, <mailto:...>" in reasons
    assert "List-Unsubscribe-Post must be List-Unsubscribe=One-Click (RFC 8058)" in reasons
    assert "List-Id is missing or not the configured one" in reasons
    assert "the text part has no unsubscribe link at the bottom" in reasons
    assert "the HTML part has no unsubscribe link at the bottom" in reasons


def test_spoofed_sender_and_third_party_links_are_refused() -> None:
    email = render(
        "service_announcement",
        "service_announcement",
        message="Deals at https://partner.example.com/offer",
    )
    spoofed = dataclasses.replace(email, sender="iMT <service@phonedoctorbiz.co>")
    reasons = compliance.check(spoofed, POLICY)
    assert "From is not the configured business address of this category" in reasons
    assert "links to third-party hosts: partner.example.com" in reasons


@pytest.mark.promise("P-31")
@pytest.mark.parametrize(
    "link",
    [
        "https://[your-bank]/login",  # brackets around a name: not an IP literal
        "https://[our site]",  # cut at the space: "https://[our"
        "https://shop\uff03example.com/",  # a fullwidth "#": a delimiter once normalised
    ],
)
def test_a_link_whose_host_cannot_be_read_is_refused_not_raised(link: str) -> None:
    """Operators' text goes into incidents and announcements unchecked; a link there that
    urlsplit cannot read is refused like a third-party one, and never quoted back."""
    email = render("incident", "account_security", message=f"Never open {link} to log in.")
    reasons = compliance.check(email, POLICY)
    assert reasons == [compliance.UNREADABLE_LINK]
    assert all(link not in reason for reason in reasons)


def test_an_unreadable_link_does_not_hide_a_third_party_one() -> None:
    message = "See https://[your-bank]/login and https://partner.example.com/offer"
    reasons = compliance.check(render("incident", "account_security", message=message), POLICY)
    third_party = "links to third-party hosts: partner.example.com"
    assert reasons == [third_party, compliance.UNREADABLE_LINK]


def test_marketing_must_use_the_marketing_sender_and_a_known_category() -> None:
    email = render("marketing_newsletter", "marketing")
    assert compliance.check(
        dataclasses.replace(email, sender=SETTINGS.notifier_from_transactional), POLICY
    ) == ["From is not the configured business address of this category"]
    assert any(
        "not a notifier category" in r
        for r in compliance.check(dataclasses.replace(email, category="sales"), POLICY)
    )


def test_built_message_has_both_parts_and_the_headers() -> None:
    email = render("service_announcement", "service_announcement", subject="Öffnungszeiten")
    wire = build_message(email, "<a.b.email@notifier.imt>")
    message = message_from_bytes(wire.data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert (wire.sender, wire.recipient) == ("service@phonedoctorbiz.com", "ada@example.org")
    assert message["Subject"] == "Öffnungszeiten"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Message-ID"] == "<a.b.email@notifier.imt>"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    text = message.get_body(("plain",))
    assert text is not None
    assert URL in text.get_content()


def fullwidth(ascii_text: str) -> str:
    """The fullwidth forms (U+FF01..U+FF5E) of printable ASCII; a space as U+3000."""
    return "".join(
        "\u3000" if c == " " else chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in ascii_text
    )


def _subject_reasons(subject: str, message: str = "We now open at 9.") -> list[str]:
    email = render("service_announcement", "service_announcement", subject=subject, message=message)
    return [r for r in compliance.check(email, POLICY) if r.startswith("misleading subject")]


@pytest.mark.promise("P-28")
@pytest.mark.parametrize(
    "subject",
    [
        fullwidth("Re") + ": hi",
        "Re\u200b: hi",  # a zero-width space inside
        "\u200eRE\u2060: hi",  # a bidi mark before, a word joiner inside
        "RE\uff1a hi",  # a fullwidth colon
        "R\u200de: hi",  # a zero-width joiner
        "Re\u00a0: hi",  # a no-break space
        "RES: hi",  # Portuguese
        "Antw: hi",  # Dutch
        "AW: hi",  # German
        "WG: hi",  # German forward
        "SV: hi",  # Nordic
        "VS: hi",  # Finnish
        "VB: hi",  # Swedish forward
        "TR: hi",  # French forward
        "RIF: hi",  # Italian
        "RV: hi",  # Spanish forward
        "ENC: hi",  # Portuguese forward
        "Odp: hi",  # Polish
        "YNT: hi",  # Turkish
        "İLT: hi",  # Turkish forward
        "ΑΠ: hi",  # Greek
        "回复\uff1ahi",  # Chinese, fullwidth colon
        "Fwd[3]: hi",
        "« Fw: hi",
    ],
)
def test_disguised_and_localised_reply_prefixes_are_refused(subject: str) -> None:
    assert _subject_reasons(subject) == ["misleading subject: fake reply or forward prefix"]


@pytest.mark.promise("P-28")
@pytest.mark.parametrize(
    "subject",
    [
        "You\u2019ve won a repair",
        "You\u02bcve won",
        "YOU`VE WON",
        fullwidth("you") + "\u2019" + fullwidth("ve won"),
        "You\u200b've won",
    ],
)
def test_a_prize_claim_with_another_apostrophe_or_width_is_refused(subject: str) -> None:
    assert _subject_reasons(subject) == ["misleading subject: prize or winnings claim"]


@pytest.mark.parametrize(
    "subject",
    ["Report: new opening hours", "Information about our shops", "Résumé of the year", "Rfc"],
)
def test_a_word_that_merely_starts_like_a_prefix_passes(subject: str) -> None:
    assert _subject_reasons(subject) == []


def test_a_claim_is_supported_by_a_body_in_other_code_points() -> None:
    """Normalised on both sides: a fullwidth "free" in the body supports the subject's."""
    wide = fullwidth("free")
    assert _subject_reasons("Free check", message=f"A {wide} check this week.") == []
    assert _subject_reasons(f"{wide} check", message="A free check this week.") == []
    assert _subject_reasons(f"{wide} check") == ["misleading subject: free offer not in the body"]


def test_a_subject_of_invisible_characters_only_is_empty() -> None:
    email = render("service_announcement", "service_announcement", subject="\u200b\u2060")
    assert "subject is empty" in compliance.check(email, POLICY)


@pytest.mark.promise("P-28")
@pytest.mark.parametrize(
    "subject", ["=?utf-8?q?Re=3A_Your_order_=23123?=", "=?utf-8?q?You_have_won_a_prize?="]
)
def test_a_misleading_subject_written_as_an_encoded_word_is_refused(subject: str) -> None:
    """Sent as is, a client decodes it: "Re: Your order #123", "You have won a prize"."""
    assert len(_subject_reasons(subject)) == 1


@pytest.mark.promise("P-21")
@pytest.mark.parametrize(
    ("message", "host"),
    [
        ("Shop at www.partner-deals.com today.", "www.partner-deals.com"),
        ("See partner-deals.com/offer", "partner-deals.com"),
        ("Deals: PARTNER-DEALS.COM.", "partner-deals.com"),
        ("Files at ftp://evil.example/x", "evil.example"),
        ("Ours and theirs: phonedoctorbiz.com,partner-deals.com", "partner-deals.com"),
        (fullwidth("partner-deals.com") + " now", "partner-deals.com"),
        ("partner-deals\u3002com", "partner-deals.com"),  # an ideographic full stop
        ("hxxp://evil.example:8080/win", "evil.example"),
    ],
)
def test_a_link_without_https_to_a_third_party_is_refused(message: str, host: str) -> None:
    """Mail clients link "www." names, bare domains and any scheme, not only https."""
    email = render("service_announcement", "service_announcement", message=message)
    assert compliance.check(email, POLICY) == [f"links to third-party hosts: {host}"]


@pytest.mark.promise("P-21")
def test_a_link_with_a_backslash_is_refused() -> None:
    """urlsplit reads the host after "@" (ours); a browser takes "\\" for "/" and goes to
    evil.example."""
    message = "Sign in at https://evil.example\\@phonedoctorbiz.com/x"
    email = render("incident", "account_security", message=message)
    assert compliance.check(email, POLICY) == [compliance.UNREADABLE_LINK]


@pytest.mark.promise("P-21")
@pytest.mark.parametrize(
    ("href", "host"),
    [
        ("//partner-deals.com/offer", "partner-deals.com"),  # the email's scheme
        ("www.partner-deals.com", "www.partner-deals.com"),
        ("https&#58;//partner-deals.com/", "partner-deals.com"),  # a browser reads &#58;
    ],
)
def test_an_href_without_https_to_a_third_party_is_refused(href: str, host: str) -> None:
    email = render("request_reply", "transactional")
    site = f'<a href="{SETTINGS.notifier_public_base_url}">'
    assert site in email.html
    linked = dataclasses.replace(email, html=email.html.replace(site, f'<a href="{href}">'))
    assert compliance.check(linked, POLICY) == [f"links to third-party hosts: {host}"]


def test_our_own_hosts_and_mailboxes_in_words_pass() -> None:
    """Only hosts not ours are refused: a mailbox on ours, our site without a scheme, a
    path after our host, a sentence's full stop after a link, versions and initials."""
    message = (
        "Write to service@phonedoctorbiz.com or jane.doe@phonedoctorbiz.com, see "
        "www.phonedoctorbiz.com/help and phonedoctorbiz.com/guide.pdf or "
        "https://phonedoctorbiz.com. Version 2.1, e.g. this, i.e. that, J. R. R. Tolkien."
    )
    for template, category in (
        ("service_announcement", "service_announcement"),
        ("incident", "account_security"),
        ("marketing_newsletter", "marketing"),
    ):
        email = render(template, category, message=message)
        assert compliance.check(email, POLICY) == [], template


@pytest.mark.parametrize(
    "words",
    [
        "Write to offers@partner-deals.com",  # an address is written to, not visited
        "Open report.pdf, policy.txt or index.html",  # no such top-level domain
        "Built on Node.js; see section 4.2.Privacy, v2.beta and 3.0.rc1",
        "We reset every password.Please sign in again.",  # .please is no domain
        "Saved in C:\\Users\\report.pdf",  # a backslash, but no host to lead to
    ],
)
def test_words_no_mail_client_makes_a_link_of_pass(words: str) -> None:
    """Clients link a bare name only when it ends in a top-level domain (IANA's list):
    refusing file names, versions or a missing space would dead-letter a notice, a breach
    notice too, for every user."""
    email = render("incident", "account_security", message=words)
    assert compliance.check(email, POLICY) == [], words


def test_our_configured_postal_address_and_label_are_no_third_party_links() -> None:
    """ "Pty.Ltd" and "P.O.Box" end in top-level domains (.ltd, .box): in the footer
    every email carries, they are our own words, not a link to anyone."""
    policy = dataclasses.replace(POLICY, postal_address="iMT Pty.Ltd., P.O.Box 42, Sydney NSW 2000")
    email = render("marketing_newsletter", "marketing", message="Spring offers.")
    email = dataclasses.replace(
        email,
        text=email.text.replace(POLICY.postal_address, policy.postal_address),
        html=email.html.replace(POLICY.postal_address, policy.postal_address),
    )
    assert policy.postal_address in email.text
    assert compliance.check(email, policy) == []
    # The control: the same words typed by an operator are judged as anyone's.
    typed = render("service_announcement", "service_announcement", message="Pty.Ltd rules")
    assert compliance.check(typed, POLICY) == ["links to third-party hosts: pty.ltd"]
