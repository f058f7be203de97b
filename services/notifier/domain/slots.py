"""Render a notice's email once, fill in each recipient: the skeletons of the Renderer.

The emails of one notice differ only in the recipient's name and unsubscribe link. So
the templates are rendered once per (template, category, params) with markers for
those two values, and each email fills the markers: a join instead of three jinja
renders. The result is the same text only if the templates print the two values as
they are (``{{ name }}``: no filter, test or expression on them), which
:func:`prints_slots_plainly` checks on the templates' syntax trees; otherwise the
Renderer renders every email in full.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jinja2
from jinja2 import nodes
from markupsafe import escape

# NUL never appears in a rendered template unless a value brought it; values holding
# one are rendered in full instead (a param could otherwise pose as a marker).
MARKERS: Mapping[str, str] = {
    "name": "\x00name\x00",
    "unsubscribe_url": "\x00unsubscribe_url\x00",
}
_MARKER = re.compile("\x00(name|unsubscribe_url)\x00")


def prints_slots_plainly(env: jinja2.Environment, source: str) -> bool:
    """True if ``source`` uses the slot variables only as whole ``{{ name }}`` outputs."""
    tree = env.parse(source)
    if any(True for _ in tree.find_all((nodes.Include, nodes.Import, nodes.FromImport))):
        return False  # templates this one pulls in are not checked here
    uses = sum(1 for n in tree.find_all(nodes.Name) if n.name in MARKERS)
    plain = sum(
        1
        for output in tree.find_all(nodes.Output)
        for n in output.nodes
        if isinstance(n, nodes.Name) and n.name in MARKERS
    )
    return uses == plain


def fillable(values: Mapping[str, object]) -> bool:
    """Whether values may go into a skeleton: strings, none holding a marker's NUL."""
    return all(isinstance(v, str) and "\x00" not in v for v in values.values())


@dataclass(frozen=True)
class Skeleton:
    """A rendering split at its markers: text, slot, text, slot, ..., text."""

    subject: tuple[str, ...]
    text: tuple[str, ...]
    html: tuple[str, ...]

    @classmethod
    def of(cls, subject: str, text: str, html: str) -> Skeleton:
        return cls(*(tuple(_MARKER.split(part)) for part in (subject, text, html)))

    def fill(self, name: str, unsubscribe_url: str) -> tuple[str, str, str]:
        """Subject, text and HTML for one recipient, escaped in HTML as jinja would."""
        plain = {"name": name, "unsubscribe_url": unsubscribe_url}
        html = {key: str(escape(value)) for key, value in plain.items()}
        return (
            " ".join(_join(self.subject, plain.__getitem__).split()),
            _join(self.text, plain.__getitem__),
            _join(self.html, html.__getitem__),
        )


def _join(pieces: tuple[str, ...], value: Callable[[str], str]) -> str:
    return "".join(value(p) if i % 2 else p for i, p in enumerate(pieces))
