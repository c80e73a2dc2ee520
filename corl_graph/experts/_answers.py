"""Extract a votable final answer from an expert's free text."""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["AnswerExtractor", "extract_answer", "normalize_answer"]

AnswerExtractor = Callable[[str], str | None]

_TAGGED = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_BOXED = re.compile(r"\\boxed\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")
_HASHES = re.compile(r"####\s*([^\n]+)")
_JSON_ANSWER = re.compile(r'"answer"\s*:\s*"?([^"\n}]+)"?')
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_OPTION = re.compile(r"^\(?([A-E])\)?[.:)]?$")
# Each pattern with a literal that every match contains, tried in this order.
_MARKED = (
    ("<answer>", _TAGGED),
    ("\\boxed{", _BOXED),
    ("####", _HASHES),
    ('"answer"', _JSON_ANSWER),
)


def normalize_answer(answer: str) -> str:
    """Normalise for voting and comparison: numbers lose ``$``, commas and trailing ``.0``.

    >>> normalize_answer(" $1,200.00 "), normalize_answer("(B)"), normalize_answer("Paris.")
    ('1200', 'B', 'paris')
    """
    a = answer.strip().rstrip(".").strip()
    if m := _OPTION.match(a):
        return m.group(1)
    number = a.replace("$", "").replace(",", "").strip()
    try:
        value = float(number)
    except ValueError:
        return " ".join(a.lower().split())
    if value.is_integer():
        return str(int(value))
    return repr(value)


def extract_answer(text: str) -> str | None:
    """The final answer in ``text``: an ``<answer>`` tag, ``\\boxed{}``, ``#### n``, a JSON
    ``"answer"`` field, else the last number; None when there is nothing to vote with.

    >>> extract_answer("so the total is \\\\boxed{42}."), extract_answer("It costs $1,200.")
    ('42', '1200')
    """
    for marker, pattern in _MARKED:
        if marker not in text:  # a substring test is much cheaper than the scan it skips
            continue
        found = pattern.findall(text)
        if found and found[-1].strip():
            return normalize_answer(found[-1])
    numbers = _NUMBER.findall(text)
    if numbers:
        return normalize_answer(numbers[-1])
    stripped = text.strip()
    if stripped and len(stripped) <= 3 and _OPTION.match(stripped):
        return normalize_answer(stripped)
    return None
