"""Verifiers: is an answer right? ``(answer, reference) -> score in [0, 1]``.

- ``exact_match``: normalised comparison (numbers lose ``$``, commas, trailing ``.0``).
- ``math_match``: symbolic equivalence through math-verify (``1/2`` == ``0.5`` == ``\\frac12``).
- any callable with the same signature (``make_verifier(my_fn)``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal

from corl_graph._exceptions import ConfigError
from corl_graph.experts import extract_answer, normalize_answer

__all__ = ["Verifier", "VerifierKind", "exact_match", "make_verifier", "math_match"]

Verifier = Callable[[str | None, str], float]
VerifierKind = Literal["exact", "math"]


def exact_match(answer: str | None, reference: str) -> float:
    """1.0 when the normalised answers agree; a ``<answer>``/boxed/``####`` wrapper is unwrapped.

    >>> exact_match("$1,200.00", "1200"), exact_match("Paris.", "paris"), exact_match(None, "1")
    (1.0, 1.0, 0.0)
    """
    if answer is None:
        return 0.0
    candidates = {normalize_answer(answer)}
    extracted = extract_answer(answer)
    if extracted is not None:
        candidates.add(extracted)
    return 1.0 if normalize_answer(reference) in candidates else 0.0


def math_match(answer: str | None, reference: str) -> float:
    """Symbolic equivalence with math-verify, falling back to ``exact_match``.

    >>> math_match("\\\\frac{1}{2}", "0.5"), math_match("x", "3")
    (1.0, 0.0)
    """
    if answer is None:
        return 0.0
    if exact_match(answer, reference):
        return 1.0
    from math_verify import parse, verify  # imported lazily: it pulls sympy

    def wrap(text: str) -> str:
        # math-verify extracts from LaTeX delimiters; bare expressions parse better in $...$
        return text if "$" in text or "\\boxed" in text else f"${text}$"

    # math-verify's timeouts use SIGALRM, which works only on the main thread
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold = parse(wrap(reference), parsing_timeout=timeout)
        pred = parse(wrap(answer), parsing_timeout=timeout)
        ok = gold and pred and verify(gold, pred, timeout_seconds=timeout)
        return 1.0 if ok else 0.0
    except Exception:  # a verifier must score, never crash a training step
        return 0.0


def make_verifier(kind: VerifierKind | Verifier) -> Verifier:
    """``"exact"``, ``"math"`` or your own ``(answer, reference) -> float``.

    >>> make_verifier("exact") is exact_match
    True
    """
    if callable(kind):
        return kind
    if kind == "exact":
        return exact_match
    if kind == "math":
        return math_match
    raise ConfigError(f"verifier must be 'exact', 'math' or a callable, got {kind!r}")
