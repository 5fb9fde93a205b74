"""The OpenAPI contract's text rules against the validation they describe."""

import re
import unicodedata

import pytest
from pydantic import TypeAdapter, ValidationError

from src.country.schemas import CountryUpdate
from src.kit.text import TEXT_PATTERN, Name

NAME = TypeAdapter(Name)
SURROGATES = range(0xD800, 0xE000)


def accepted(text: str) -> bool:
    try:
        NAME.validate_python(text)
    except ValidationError:
        return False
    return True


def names_something(text: str) -> bool:
    """What the pattern leaves to the validator (and the description says): a letter or
    digit, and no unassigned code point (browsers' Unicode tables are not Python's)."""
    categories = {unicodedata.category(char) for char in text}
    return "Cn" not in categories and any(c[0] in "LN" for c in categories)


@pytest.mark.parametrize("shape", ["{}", "a{}", "{}a", " {} "])
def test_text_pattern_is_exactly_the_name_validation(shape):
    """For every character outside the surrogates (the first plane holds every control,
    whitespace and private-use character), the advertised pattern and the validator agree."""
    pattern = re.compile(TEXT_PATTERN)
    disagree = [
        f"U+{code:04X}"
        for code in range(0x10000)
        if code not in SURROGATES
        and accepted(text := shape.format(chr(code)))
        != (bool(pattern.match(text)) and names_something(text))
    ]
    assert disagree == []


def test_lengths_count_the_text_as_sent():
    """maxLength judges what the client sent, so padding cannot sneak past it."""
    assert NAME.validate_python("\t" + "a" * 199) == "a" * 199
    assert not accepted(" " + "a" * 200)
    assert re.match(TEXT_PATTERN, " " + "a" * 200)  # the pattern allows it; maxLength does not
    assert not accepted("")
    assert not accepted(" \u3000\n")


def test_lone_surrogates_are_refused_as_the_description_says():
    assert not any(accepted(f"a{chr(code)}") for code in SURROGATES)
    assert accepted("a\U0001f600") and re.match(TEXT_PATTERN, "a\U0001f600")
    assert "lone surrogates" in Name.__metadata__[-1].description


def test_update_schema_says_what_patch_refuses():
    """Non-nullable fields are not advertised nullable; an empty body is refused and says so."""
    schema = CountryUpdate.model_json_schema()
    assert schema["minProperties"] == 1 and schema["additionalProperties"] is False
    properties = schema["properties"]
    for field in ("alpha2", "alpha3", "name"):
        assert "anyOf" not in properties[field] and properties[field]["type"] == "string"
        with pytest.raises(ValidationError):
            CountryUpdate.model_validate({field: None})
    for field in ("numeric", "official_name"):
        assert {"type": "null"} in properties[field]["anyOf"]
        assert CountryUpdate.model_validate({field: None}).model_dump(exclude_unset=True) == {
            field: None
        }
    with pytest.raises(ValidationError, match="at least one field"):
        CountryUpdate.model_validate({})
