"""What counts as a blank text, one rule for the encoders (a blank document or query encodes as the empty text)
and for the generators (a blank question is refused, or skipped by the ``generate`` step): empty, or nothing but
whitespace and invisible characters.  A module of its own so that the generators need not import the encoders.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["is_blank"]

#: A letter or a digit: a text holding one is not blank (found at its first words: no per-character work)
_LETTER_OR_DIGIT = re.compile(r"[^\W_]")
#: Unicode categories of what shows nothing: control characters (NUL, ...), format characters (zero-width space
#: U+200B, soft hyphen, BOM, ZWJ / ZWNJ, bidi marks, ...) and separators; BERT-style tokenizers (MiniLM's) drop
#: the first two and split on the third, so a text of only these encodes as the empty text does
_INVISIBLE = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def is_blank(text: str) -> bool:
    """Whether ``text`` shows nothing: empty, or only whitespace, control and format characters (and U+FFFD, the
    replacement character, which those tokenizers drop too)."""
    if not text or text.isspace():
        return True
    if _LETTER_OR_DIGIT.search(text) is not None:
        return False
    return all(c == "\ufffd" or unicodedata.category(c) in _INVISIBLE for c in text)
