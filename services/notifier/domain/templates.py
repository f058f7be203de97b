"""The templates the notifier ships, the categories each may be sent in, and rendering.

Bodies live in ``services/notifier/templates/<name>.txt|.html`` (jinja2; HTML is
autoescaped) and extend a layout variable: ``_email.*`` adds the greeting and the
footer (unsubscribe link, postal address, advertisement label), ``_inbox.txt`` the
bare body for the in-site inbox. Subjects and inbox titles are small jinja strings
here. ``params`` hold ids, links and operator wording, never personal data; the only
personal datum rendered is the recipient's name, at send time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jinja2
from markupsafe import Markup

from services.notifier.domain import slots

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
SKELETONS_KEPT = 256  # notices whose rendering is kept (a notice mails its users together)
# Templates whose params hold a single-use secret (an action token and its link): kept
# until their one email is done (a dead one keeps them for a replay; they expire anyway),
# and never shown in-site (an inbox item is kept, exported and streamed).
SECRET_LINKS = frozenset(
    {"verify_email", "verify_new_email", "parental_consent", "password_reset"}
    | {"signup_attempted"}  # a password-reset link
    | {"deletion_requested"}  # its email's link cancels the deletion without a sign-in
    | {"erasure_done"}  # its link shows the erasure's stages without a sign-in
)
SECRET_PARAMS = ("token", "link", "verify_url", "consent_url", "reset_url", "cancel_url")
# What an inbox item shows where a spent link was: items stored before such notices were
# refused in-site (handlers.secret_link_problems) lost their link with their email.
SPENT_LINK = "(the link went by email only and is no longer shown here)"


@dataclass(frozen=True)
class TemplateSpec:
    subject: str
    title: str
    categories: frozenset[str]
    required: tuple[str, ...] = ()
    pinned: bool = False
    guardian: bool = False  # may (and, for parental consent, must) go to the guardian
    pending: bool = False  # goes to the card's address waiting for confirmation, only


def _spec(
    subject: str,
    categories: set[str],
    required: tuple[str, ...] = (),
    *,
    title: str | None = None,
    pinned: bool = False,
    guardian: bool = False,
    pending: bool = False,
) -> TemplateSpec:
    return TemplateSpec(
        subject, title or subject, frozenset(categories), required, pinned, guardian, pending
    )


TEMPLATES: dict[str, TemplateSpec] = {
    "verify_email": _spec("Confirm your email address", {"transactional"}, ("verify_url",)),
    # The link confirming a new address, mailed to that address (recipient "pending").
    "verify_new_email": _spec(
        "Confirm the new email address of your iMT account",
        {"transactional"},
        ("verify_url", "change"),
        pending=True,
    ),
    "parental_consent": _spec(
        "Your consent is needed for a child's iMT account",
        {"transactional"},
        ("consent_url",),
        guardian=True,
    ),
    "request_reply": _spec("You have a reply to your request", {"transactional"}, ("request_id",)),
    "service_announcement": _spec(
        "{{ params.subject }}", {"service_announcement"}, ("subject", "message")
    ),
    "policy_change": _spec(
        "Our privacy policy changes: version {{ params.policy_version }}",
        {"policy_change"},
        ("policy_version", "summary", "effective_at"),
        pinned=True,
    ),
    "incident": _spec(
        "Security notice: {{ params.title }}",
        {"account_security"},
        ("title", "message"),
        pinned=True,
    ),
    "deletion_requested": _spec(
        "We received your request to delete your account",
        {"account_security"},
        ("cancel_url",),
    ),
    "deletion_cancelled": _spec("Your account deletion was cancelled", {"account_security"}),
    "erasure_done": _spec("Your data has been deleted", {"transactional"}),
    "password_changed": _spec("Your iMT password was changed", {"account_security"}),
    # Sent by the notifier itself, to the address an email change replaced (recipient
    # "previous"); never asked for by another service.
    "email_changed": _spec(
        "The email address of your iMT account was changed", {"account_security"}
    ),
    "password_reset": _spec("Reset your iMT password", {"transactional"}, ("reset_url",)),
    # A sign-up with an address an account already has: its owner learns of it, with a
    # reset link that takes back an account someone else created with the address.
    "signup_attempted": _spec(
        "Someone tried to create an iMT account with your email address",
        {"transactional"},
        ("reset_url", "account_state"),
    ),
    "marketing_newsletter": _spec(
        "{{ params.subject }}", {"marketing"}, ("subject", "headline", "message")
    ),
}


# Names other services use for the same parameter (accounts sends ``link``, ``title``).
ALIASES: dict[str, dict[str, str]] = {
    "verify_email": {"link": "verify_url"},
    "verify_new_email": {"link": "verify_url"},
    "parental_consent": {"link": "consent_url"},
    "password_reset": {"link": "reset_url"},
    "signup_attempted": {"link": "reset_url"},
    "deletion_requested": {"link": "cancel_url"},
    "service_announcement": {"title": "subject"},
    "marketing_newsletter": {"title": "subject"},
}


def normalise_params(template: str, params: Mapping[str, str]) -> dict[str, str]:
    """``params`` with each alias also under the template's own name."""
    normalised = dict(params)
    for alias, name in ALIASES.get(template, {}).items():
        if alias in normalised and not normalised.get(name):
            normalised[name] = normalised[alias]
    return normalised


def notice_problems(
    template: str, category: str, params: Mapping[str, str], recipient: str = "user"
) -> list[str]:
    """Why a notice can never be sent (empty: it can)."""
    spec = TEMPLATES.get(template)
    if spec is None:
        return [f"unknown template {template!r}"]
    problems = []
    if category not in spec.categories:
        problems.append(f"template {template} is not sent as {category}")
    missing = [p for p in spec.required if not params.get(p)]
    if missing:
        problems.append(f"template {template} needs params {', '.join(missing)}")
    if recipient == "guardian" and not spec.guardian:
        problems.append(f"template {template} is not sent to guardians")
    if template == "parental_consent" and recipient != "guardian":
        problems.append("parental_consent goes to the guardian")
    if spec.pending and recipient != "user":
        problems.append(f"template {template} goes to the address being confirmed, only")
    if (template == "email_changed") != (recipient == "previous"):
        problems.append("email_changed goes to the replaced address, and only it")
    return problems


_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")  # one or more, spaces on them too


def paragraphs(text: str) -> Markup:
    """Operators' text for the HTML part, inside a ``<p>``: escaped, each blank line a
    new paragraph, each line break a ``<br>``. The text part keeps the lines as typed;
    HTML runs them into one ("1. Reset" and "2. Sign in" read "1. Reset 2. Sign in")."""
    typed = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    # Markup.join escapes what it joins: only the tags here are markup.
    return Markup("</p>\n<p>").join(
        Markup("<br>\n").join(part.split("\n")) for part in _BLANK_LINES.split(typed)
    )


@dataclass(frozen=True)
class Footer:
    """What the email layout prints at the bottom."""

    site_url: str
    postal_address: str
    ad_label: str
    # The configured Reply-To mailbox: the one address a user without an account (the
    # final erasure email's reader) can still write to.
    contact_address: str = ""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


class Renderer:
    """Renders the shipped templates; unknown variables are errors, not blanks."""

    def __init__(self, folder: Path = TEMPLATE_DIR, *, skeletons: bool = True) -> None:
        loader = jinja2.FileSystemLoader(folder)
        # auto_reload off: the templates ship with the code, and checking their files'
        # modification times cost four stat calls per email.
        self._html = jinja2.Environment(
            loader=loader, autoescape=True, undefined=jinja2.StrictUndefined, auto_reload=False
        )
        self._html.filters["paragraphs"] = paragraphs
        # Plain text and subjects, never HTML: nothing to escape.
        self._text = jinja2.Environment(
            loader=loader,
            autoescape=False,  # noqa: S701
            undefined=jinja2.StrictUndefined,
            auto_reload=False,
        )
        self._strings: dict[str, jinja2.Template] = {}
        # Emails rendered once per notice and filled per recipient (domain/slots.py).
        self._use_skeletons = skeletons
        self._skeletons: dict[tuple[object, ...], slots.Skeleton] = {}
        self._plain: dict[str, bool] = {}

    def _string(self, source: str) -> jinja2.Template:
        """A subject or title template, compiled once (compiling costs 25 renders)."""
        compiled = self._strings.get(source)
        if compiled is None:
            compiled = self._strings[source] = self._text.from_string(source)
        return compiled

    def email(
        self,
        template: str,
        *,
        category: str,
        params: Mapping[str, str],
        name: str,
        unsubscribe_url: str,
        footer: Footer,
    ) -> RenderedEmail:
        fillable = self._fillable(template, params, footer)
        key = (template, category, tuple(sorted(params.items())), footer) if fillable else ()
        skeleton = self._skeletons.get(key) if fillable else None
        if skeleton is None and fillable:
            subject, text, html = self._render(template, category, params, footer, **slots.MARKERS)
            skeleton = slots.Skeleton.of(subject, text, html)
            if len(self._skeletons) >= SKELETONS_KEPT:
                del self._skeletons[next(iter(self._skeletons))]  # the oldest notice's
            self._skeletons[key] = skeleton
        if skeleton is None:
            return RenderedEmail(
                *self._render(
                    template, category, params, footer, name=name, unsubscribe_url=unsubscribe_url
                )
            )
        return RenderedEmail(*skeleton.fill(name, unsubscribe_url))

    def _fillable(self, template: str, params: Mapping[str, str], footer: Footer) -> bool:
        if not (self._use_skeletons and slots.fillable(params) and slots.fillable(vars(footer))):
            return False
        plain = self._plain.get(template)
        if plain is None:
            sources = [
                (self._text, TEMPLATES[template].subject),
                *((self._text, self._source(f)) for f in (f"{template}.txt", "_email.txt")),
                *((self._html, self._source(f)) for f in (f"{template}.html", "_email.html")),
            ]
            plain = self._plain[template] = all(
                slots.prints_slots_plainly(env, source) for env, source in sources
            )
        return plain

    def _source(self, name: str) -> str:
        assert self._text.loader is not None
        return self._text.loader.get_source(self._text, name)[0]

    def _render(
        self,
        template: str,
        category: str,
        params: Mapping[str, str],
        footer: Footer,
        *,
        name: str,
        unsubscribe_url: str,
    ) -> tuple[str, str, str]:
        spec = TEMPLATES[template]
        context = {
            "params": dict(params),
            "name": name,
            "category": category,
            "is_marketing": category == "marketing",
            "unsubscribe_url": unsubscribe_url,
            "site_url": footer.site_url,
            "postal_address": footer.postal_address,
            "ad_label": footer.ad_label,
            "contact_address": footer.contact_address,
        }
        subject = self._string(spec.subject).render(context)
        subject = " ".join(subject.split())  # never a header line break
        text = self._text.get_template(f"{template}.txt").render(layout="_email.txt", **context)
        html = self._html.get_template(f"{template}.html").render(layout="_email.html", **context)
        return subject, text, html

    def inbox(self, template: str, params: Mapping[str, str]) -> tuple[str, str]:
        """Title and plain-text body of an in-site notice."""
        spec = TEMPLATES[template]
        shown = dict(params)
        if template in SECRET_LINKS:
            shown.update({k: SPENT_LINK for k in SECRET_PARAMS if k not in shown})
        context = {"params": shown, "is_marketing": False, "name": ""}
        title = " ".join(self._string(spec.title).render(context).split())
        body = self._text.get_template(f"{template}.txt").render(layout="_inbox.txt", **context)
        return title, body.strip()
