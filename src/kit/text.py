"""Text fields every resource shares: trimmed, clean Unicode, validated by Pydantic v2."""

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

# Bidirectional overrides/isolates can make text display differently from what it is.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

# Unicode's White_Space, trimmed (str.strip() would also take \x1c-\x1f, refused instead).
_WHITESPACE = "\t\n\x0b\x0c\r\x85 \xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(
    map(chr, range(0x2000, 0x200B))
)

# Joiners shape real scripts (Persian ZWNJ, Indic conjuncts) and emoji sequences, and tag
# characters spell subdivision flags; every other format character (Cf) is invisible, so
# it could make a name look blank or two names look alike: refused.
_SHAPING = frozenset("\u200c\u200d" + "".join(map(chr, range(0xE0020, 0xE0080))))
# The first plane's refused format characters, for the pattern (a short list).
_INVISIBLE = "".join(
    f"\\u{code:04x}"
    for code in range(0x10000)
    if unicodedata.category(chr(code)) == "Cf" and chr(code) not in _SHAPING | _BIDI_CONTROLS
)

# _text as a JSON Schema pattern, for OpenAPI: exact but for the rules a regular expression
# cannot share with browsers (tests/test_schemas.py holds it to Name): a name's letter or
# digit and unassigned code points (Unicode's tables differ between versions).
_REFUSED = (
    r"\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069\ue000-\uf8ff\ufdd0-\ufdef\ufffe\uffff"
    + _INVISIBLE
)
_SPACES = r" \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_TRIMMED = rf"\u0009-\u000d\u0085{_SPACES}"
TEXT_PATTERN = f"^[{_TRIMMED}]*[^{_REFUSED}]*[^{_REFUSED}{_SPACES}][^{_REFUSED}]*[{_TRIMMED}]*$"
TEXT_RULES = (
    "The length counts the text as sent; surrounding whitespace is then trimmed. Control "
    "characters, bidi overrides, invisible format characters (all but ZWJ, ZWNJ and emoji "
    "tags), private-use, unassigned and noncharacter code points and lone surrogates (not "
    "valid Unicode) are refused."
)
NAME_RULES = "A name needs at least one letter or digit (Unicode categories L or N)."


def clean_text(value: str) -> str:
    """Any script or emoji (joiners included), but no control characters, lone
    surrogates (PostgreSQL cannot store them), bidi overrides, invisible format characters
    or code points without a character (unassigned, private-use, noncharacters)."""
    for char in value:
        category = unicodedata.category(char)
        if category == "Cs":
            raise ValueError("must be valid unicode (no lone surrogates)")
        if category == "Cc" or char in _BIDI_CONTROLS:
            raise ValueError(f"must not contain control character U+{ord(char):04X}")
        if category == "Cf" and char not in _SHAPING:
            raise ValueError(f"must not contain invisible format character U+{ord(char):04X}")
        if category in ("Cn", "Co"):  # noncharacters are unassigned (Cn) for good
            raise ValueError(
                f"must not contain unassigned, private-use or noncharacter U+{ord(char):04X}"
            )
    return value


def _text(value: str) -> str:
    """Trimmed, clean and not blank (its length was checked as sent, as the schema says)."""
    value = clean_text(value.strip(_WHITESPACE))
    if not value:
        raise ValueError("must not be only whitespace")
    return value


def _name(value: str) -> str:
    """Clean text that shows something: combining marks, joiners or emoji alone do not name."""
    value = _text(value)
    if not any(unicodedata.category(char)[0] in "LN" for char in value):
        raise ValueError("must contain at least one letter or digit")
    return value


Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    AfterValidator(_name),
    Field(
        description=f"Any script or emoji. {TEXT_RULES} {NAME_RULES}",
        examples=["Kosovo"],
        json_schema_extra={"pattern": TEXT_PATTERN},
    ),
]
SearchText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100),
    AfterValidator(_text),
    Field(json_schema_extra={"pattern": TEXT_PATTERN}),
]
