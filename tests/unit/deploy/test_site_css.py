"""The stylesheet the gateway publishes (web/assets/site.css) keeps its text readable in
both colour schemes: WCAG 2 AA contrast, 4.5:1, computed from the CSS's own values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CSS = (Path(__file__).resolve().parents[3] / "web" / "assets" / "site.css").read_text()
AA = 4.5
LIGHT_CANVAS = "#ffffff"
# What browsers paint under `color-scheme: dark` when a page sets no background:
# Chromium's canvas and Firefox's.
DARK_CANVASES = ("#121212", "#1c1b22")


def _channel(value: int) -> float:
    c = value / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _luminance(colour: str) -> float:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * _channel(r) + 0.7152 * _channel(g) + 0.0722 * _channel(b)


def contrast(a: str, b: str) -> float:
    lighter, darker = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def _variables(block: str) -> dict[str, str]:
    return dict(re.findall(r"(--[\w-]+):\s*(#[0-9a-fA-F]{6})\b", block))


def _schemes() -> tuple[dict[str, str], dict[str, str]]:
    dark = re.search(r"@media \(prefers-color-scheme: dark\) \{\s*:root \{([^}]*)\}", CSS)
    assert dark is not None, "no dark scheme"
    light = re.search(r"^:root \{([^}]*)\}", CSS, re.M)
    assert light is not None
    return _variables(light.group(1)), _variables(dark.group(1))


def test_the_ratio_is_wcags() -> None:
    assert contrast("#000000", "#ffffff") == pytest.approx(21)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)


def test_text_is_coloured_only_through_the_variables_each_scheme_sets() -> None:
    light, dark = _schemes()
    assert {"--accent", "--error"} <= set(light)
    assert set(dark) == set(light)  # the dark scheme replaces every colour
    assert re.findall(r"(?<![-\w])color:(?!\s*var\()[^;]*", CSS) == []  # no literal text colour


def test_light_scheme_colours_reach_aa_on_white() -> None:
    light, _ = _schemes()
    for name, colour in light.items():
        assert contrast(colour, LIGHT_CANVAS) >= AA, (name, colour)


@pytest.mark.parametrize("canvas", DARK_CANVASES)
def test_dark_scheme_colours_reach_aa_on_a_dark_canvas(canvas: str) -> None:
    _, dark = _schemes()
    for name, colour in dark.items():
        assert contrast(colour, canvas) >= AA, (name, colour, round(contrast(colour, canvas), 2))
