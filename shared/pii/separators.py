"""The characters people, editors and web pages put between a number's digit groups.

A reader sees the same number whichever of them is used, so a detector must too: each
stands for the ASCII space or ``-`` that keyboards type. Line breaks are left out on
purpose (see phones.py); the card detector, which has the Luhn check to rule out joining
unrelated numbers, accepts them on its own.
"""

from __future__ import annotations

# Every Unicode space separator (category Zs) besides the ASCII one: no-break (U+00A0),
# the typographic spaces U+2000-U+200A (thin, figure, punctuation...), narrow no-break
# (U+202F, how French writes "06 12 34 56 78"), medium mathematical (U+205F), ideographic
# (U+3000) and Ogham (U+1680).
UNICODE_SPACES = (
    "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u202f\u205f\u3000"
)
# Invisible in running text, so a number split by them still reads as one: zero-width
# space, non-joiner, joiner, word joiner, the invisible operators U+2061-U+2064, the
# Mongolian vowel separator, the byte order mark (a zero-width no-break space) and the
# soft hyphen, which pages insert so that long numbers may wrap.
INVISIBLE_SEPARATORS = "\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\u180e\ufeff\u00ad"
# What editors and input methods make of "-": the Unicode hyphens and dashes (U+2010
# hyphen, U+2011 non-breaking hyphen, figure dash, en and em dashes, horizontal bar),
# the minus sign, the small and full-width hyphen-minus and em dash, and the Japanese
# long-vowel mark, typed as a dash between digits.
UNICODE_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d\u30fc"
