"""A notice rendered once and filled per recipient reads exactly like a full rendering."""

from __future__ import annotations

import jinja2
import pytest

from services.notifier.domain import compliance, slots
from services.notifier.domain.templates import TEMPLATES, Footer, RenderedEmail, Renderer
from tests.unit.notifier.test_compliance import PARAMS, POLICY, SETTINGS, URL, outgoing

FOOTER = Footer(
    SETTINGS.notifier_public_base_url,
    SETTINGS.notifier_postal_address,
    SETTINGS.notifier_ad_label,
)
NAMES = ["Ada", "", "Ada <b>", "Zoë & \"Q\" 'O'", "two\nlines  and  spaces", "\x00name\x00"]
CASES = [
    (template, category) for template, spec in TEMPLATES.items() for category in spec.categories
]


@pytest.mark.parametrize(("template", "category"), CASES)
def test_every_template_fills_to_the_full_rendering(template: str, category: str) -> None:
    filled, full = Renderer(), Renderer(skeletons=False)
    for name in NAMES:
        for url in (URL, f"{URL}?a=1&b=<2>"):
            kwargs = {"category": category, "name": name, "unsubscribe_url": url}
            assert filled.email(template, params=PARAMS, footer=FOOTER, **kwargs) == full.email(
                template, params=PARAMS, footer=FOOTER, **kwargs
            )


def test_the_shipped_templates_are_all_filled_not_rendered() -> None:
    renderer = Renderer()
    for template, category in CASES:
        renderer.email(
            template,
            category=category,
            params=PARAMS,
            name="Ada",
            unsubscribe_url=URL,
            footer=FOOTER,
        )
    assert renderer._plain == dict.fromkeys(TEMPLATES, True)


def test_params_that_hold_a_marker_are_rendered_in_full() -> None:
    params = {**PARAMS, "request_id": "\x00name\x00"}
    email = Renderer().email(
        "request_reply",
        category="transactional",
        params=params,
        name="Ada",
        unsubscribe_url=URL,
        footer=FOOTER,
    )
    assert "\x00name\x00" in email.text
    assert "reference \x00name\x00" in email.text


@pytest.mark.parametrize(
    ("source", "plain"),
    [
        ("Hello {{ name }}, {{ unsubscribe_url }} {{ params.x | upper }}", True),
        ("Hello {{ name | upper }}", False),
        ("{% if name %}Hello {{ name }}{% endif %}", False),
        ("{{ name ~ '!' }}", False),
        ("{% set name = 'x' %}{{ name }}", False),
        ("{{ unsubscribe_url[:10] }}", False),
        ("{% include 'other.txt' %}", False),
        ("{% for x in params %}{{ name }}{% endfor %}", True),
    ],
)
def test_only_plain_uses_of_the_slots_pass(source: str, plain: bool) -> None:
    assert slots.prints_slots_plainly(jinja2.Environment(autoescape=True), source) is plain


@pytest.mark.parametrize(
    ("state", "says", "never"),
    [
        ("unconfirmed", "do not confirm it", "If it was you, sign in"),
        ("active", "If it was you, sign in", "do not confirm it"),
        ("awaiting_consent", "waits for the consent of a parent", "If it was you, sign in"),
    ],
)
def test_a_sign_up_with_a_taken_address_tells_its_owner_what_the_link_does(
    state: str, says: str, never: str
) -> None:
    email = Renderer().email(
        "signup_attempted",
        category="transactional",
        params={**PARAMS, "account_state": state},
        name="there",
        unsubscribe_url=URL,
        footer=FOOTER,
    )
    for body in (email.text, email.html):
        assert says in body
        assert never not in body
        assert PARAMS["reset_url"] in body


OPERATOR_TEXT = "Steps:\r\n1. Reset <b>it</b>\n2. Sign in\n\n  \nThanks & bye\n"
OPERATOR_HTML = (
    "Steps:<br>\n1. Reset &lt;b&gt;it&lt;/b&gt;<br>\n2. Sign in</p>\n<p>Thanks &amp; bye</p>"
)


@pytest.mark.parametrize(
    ("template", "category", "param"),
    [
        ("incident", "account_security", "message"),
        ("service_announcement", "service_announcement", "message"),
        ("marketing_newsletter", "marketing", "message"),
        ("policy_change", "policy_change", "summary"),
    ],
)
def test_operators_line_breaks_and_paragraphs_reach_the_html_part(
    template: str, category: str, param: str
) -> None:
    """Escaped, a blank line a new paragraph, a line break a <br>; filled as rendered in
    full, and the gate still passes the email."""
    params = {**PARAMS, param: OPERATOR_TEXT}

    def render(renderer: Renderer) -> RenderedEmail:
        return renderer.email(
            template, category=category, params=params, name="Ada", unsubscribe_url=URL,
            footer=FOOTER,
        )  # fmt: skip

    filled = render(Renderer())
    assert filled == render(Renderer(skeletons=False))
    assert OPERATOR_HTML in filled.html
    assert "1. Reset <b>it</b>\n2. Sign in" in filled.text
    assert compliance.check(outgoing(category, filled), POLICY) == []
