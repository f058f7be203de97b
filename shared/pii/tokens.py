"""Secrets: bearer credentials, JWTs and long random-looking hex or base64 strings.

"Random-looking" is a heuristic. Base64 candidates must mix letters and digits and must
not read like words (slugs such as ``replace-the-battery-of-a-galaxy-s23-ultra`` or
identifiers such as ``ThisIsALongCamelCaseName42`` are kept), so a few single-case random
strings of about 32 characters slip through; longer ones almost never do.
"""

from __future__ import annotations

import re

from shared.pii.findings import Finding, PiiKind, merge_overlapping

MIN_TOKEN_LENGTH = 32
MIN_CREDENTIAL_LENGTH = 8

_AUTH_SCHEME = re.compile(r"\b(?:bearer|basic)\s+([A-Za-z0-9._~+/-]+=*)", re.IGNORECASE)
_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_HEX = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{32,}(?![0-9A-Fa-f])")
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{32,}={0,2}")
# Splits "HTTPServerConfig2" into HTTP, Server, Config: the words a human would have typed.
_WORD_CHUNK = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")
_VOWELS = frozenset("aeiouyAEIOUY")
MIN_WORDY_SHARE = 0.85  # of letters inside pronounceable chunks; random base64 has ~0.5
MIN_VOWEL_SHARE = 0.28  # of letters; English has ~0.4, random letters ~0.23


def find_tokens(text: str) -> list[Finding]:
    """Credentials and random-looking secrets in ``text``, sorted and non-overlapping."""
    found = [
        Finding(PiiKind.TOKEN, m.start(1), m.end(1))
        for m in _AUTH_SCHEME.finditer(text)
        if _is_credential(m.group(1))
    ]
    found += [Finding(PiiKind.TOKEN, m.start(), m.end()) for m in _JWT.finditer(text)]
    found += [_token(m) for m in _HEX.finditer(text) if _has_digit(m.group())]
    found += [_token(m) for m in _BASE64.finditer(text) if looks_random(m.group())]
    return merge_overlapping(found)


def looks_random(candidate: str) -> bool:
    """Whether a letters-and-digits string looks generated rather than typed."""
    if not _has_digit(candidate) or not any(char.isalpha() for char in candidate):
        return False
    letters = [char for char in candidate if char.isalpha()]
    vowel_share = sum(char in _VOWELS for char in letters) / len(letters)
    return _wordy_share(candidate, len(letters)) < MIN_WORDY_SHARE or vowel_share < MIN_VOWEL_SHARE


def _wordy_share(candidate: str, letter_count: int) -> float:
    chunks = _WORD_CHUNK.findall(candidate)
    wordy = sum(len(c) for c in chunks if len(c) >= 3 and not _VOWELS.isdisjoint(c))
    return wordy / letter_count


def _is_credential(candidate: str) -> bool:
    # "Bearer authentication" in prose is not a credential; generated ones carry digits.
    return len(candidate) >= MIN_CREDENTIAL_LENGTH and _has_digit(candidate)


def _has_digit(candidate: str) -> bool:
    return any(char.isdigit() for char in candidate)


def _token(match: re.Match[str]) -> Finding:
    return Finding(PiiKind.TOKEN, match.start(), match.end())
