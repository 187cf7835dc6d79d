"""A cheap character scan run before sqlglot sees the text: size, nesting, quotes, characters."""

from __future__ import annotations

import re
import unicodedata

from audiences.errors import ErrorDetail
from audiences.rules.diagnostics import at
from audiences.rules.rule import RuleLimits

# Letters that render like ASCII ones (Cyrillic, Greek, Latin look-alikes); NFKC handles the
# full-width and compatibility forms. https://www.unicode.org/Public/security/latest/confusables.txt
CONFUSABLES = dict(
    zip(
        "аеорсухіјѕԁӏАВЕКМНОРСТХІЈЅοαρνκτυχιΑΒΕΖΗΙΚΜΝΟΡΤΥΧɑɡıℓ",
        "aeopcyxijsdlABEKMHOPCTXIJSoapvktuxiABEZHIKMNOPTYXagil",
        strict=True,
    )
)
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F)}
_WORD = re.compile(r"\w+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_OPEN, _CLOSE = "([", ")]"


def scan(text: str, limits: RuleLimits) -> list[ErrorDetail]:
    """Problems found without parsing; a too-large, too-deep or unterminated rule stops here.

    >>> [p.code for p in scan("((a = 1)", RuleLimits(max_depth=1))]
    ['rule_too_deep']
    """
    if len(text) > limits.max_length:
        return [
            at(
                "rule_too_large",
                f"The rule is {len(text):,} characters; the limit is {limits.max_length:,}.",
                text,
                (limits.max_length, len(text)),
            )
        ]
    return _scan_characters(text, limits)


def _scan_characters(text: str, limits: RuleLimits) -> list[ErrorDetail]:
    problems: list[ErrorDetail] = []
    depth, quote, opened = 0, "", 0
    for index, char in enumerate(text):
        if quote:
            if char == quote:
                quote = ""
            elif char in _BIDI:
                problems.append(_bidi(text, index))
            elif _SURROGATE.match(char):
                problems.append(_surrogate(text, index))
            continue
        if char in "'\"":
            quote, opened = char, index
        elif char in _OPEN:
            depth += 1
            if depth > limits.max_depth:
                return [_too_deep(text, index, limits)]
        elif char in _CLOSE:
            depth -= 1
        elif char == ";":
            return [_semicolon(text, index)]
        elif not char.isascii():
            problems.append(_character(text, index))
    if quote:
        kind = "string" if quote == "'" else "quoted name"
        problems.append(at("rule_syntax", f"Unterminated {kind}.", text, (opened, len(text))))
    return _dedupe(problems)


def _too_deep(text: str, index: int, limits: RuleLimits) -> ErrorDetail:
    message = f"The rule nests deeper than {limits.max_depth} levels."
    return at("rule_too_deep", message, text, (index, index + 1))


def _semicolon(text: str, index: int) -> ErrorDetail:
    return at(
        "rule_forbidden",
        "A rule is one expression: ';' (a second statement) is not allowed.",
        text,
        (index, index + 1),
    )


def _bidi(text: str, index: int) -> ErrorDetail:
    name = unicodedata.name(text[index], f"U+{ord(text[index]):04X}")
    message = f"Invisible bidirectional control character {name} is not allowed."
    return at("rule_bad_character", message, text, (index, index + 1))


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate: a code point that is half of a UTF-16 pair,
    which no UTF-8 text (so no database, JSON column or response) can hold.

    >>> has_surrogate("café"), has_surrogate(chr(0xD800))
    (False, True)
    """
    return _SURROGATE.search(text) is not None


SURROGATE_MESSAGE = "A lone surrogate (half of a UTF-16 pair) is not text and is not allowed."


def _surrogate(text: str, index: int) -> ErrorDetail:
    return at("rule_bad_character", SURROGATE_MESSAGE, text, (index, index + 1))


def _character(text: str, index: int) -> ErrorDetail:
    """A non-ASCII character outside quotes: a look-alike letter in a name, or a stray one."""
    word = _word_at(text, index)
    if word is None:
        name = unicodedata.name(text[index], f"U+{ord(text[index]):04X}")
        message = f"Unexpected character {name}; only ASCII is allowed outside quotes."
        return at("rule_bad_character", message, text, (index, index + 1))
    start, end = word
    ascii_form = skeleton(text[start:end])
    suggestion = ascii_form if ascii_form.isascii() else None
    message = f"The name {text[start:end]!r} contains non-ASCII look-alike characters."
    return at("rule_confusable", message, text, (start, end), suggestion=suggestion)


def _word_at(text: str, index: int) -> tuple[int, int] | None:
    for match in _WORD.finditer(text, max(0, index - 128), index + 128):
        if match.start() <= index < match.end():
            return match.span()
    return None


def skeleton(word: str) -> str:
    """The ASCII look-alike of a word, for a did-you-mean.

    >>> skeleton("c\u043euntry")  # the second letter is Cyrillic
    'country'
    """
    folded = unicodedata.normalize("NFKC", word)
    return "".join(CONFUSABLES.get(char, char) for char in folded)


def _dedupe(problems: list[ErrorDetail]) -> list[ErrorDetail]:
    seen: set[tuple[int | None, int | None]] = set()
    unique = []
    for problem in problems:
        if (problem.start, problem.end) not in seen:
            seen.add((problem.start, problem.end))
            unique.append(problem)
    return unique
