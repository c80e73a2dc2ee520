"""The checks every value passes before a ledger stores it: finite amounts, bounded ids."""

from __future__ import annotations

import math

from corl_graph._exceptions import ConfigError

__all__ = ["MAX_ID_CHARS", "MAX_TOKENS", "check_amount", "check_id", "check_tokens"]

# Longest id (tenant, query, expert, reservation) a ledger stores: PostgreSQL's btree indexes
# refuse keys over ~2.7 KB, and every ledger row and audit line repeats the query id.
MAX_ID_CHARS = 200
# More tokens than any one call can use: a count above this is a provider's error, and it
# would overflow SQLite's and PostgreSQL's 64-bit integers long before it made sense.
MAX_TOKENS = 10**9


def check_amount(value: float, what: str) -> float:
    """``value`` if it is a finite number >= 0 (dollars, seconds), else ``ConfigError``."""
    # Fast path for the common case (every ledger operation checks several values); NaN and
    # infinity fail the comparison and take the checks below.
    if type(value) is float and 0.0 <= value < math.inf:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{what} must be a finite number >= 0, got {value!r}")
    return value


def check_tokens(value: int, what: str) -> int:
    """``value`` if it is a whole number in [0, MAX_TOKENS], else ``ConfigError``."""
    if type(value) is int and 0 <= value <= MAX_TOKENS:  # fast path (bool is not int here)
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be a whole number of tokens, got {value!r}")
    if not 0 <= value <= MAX_TOKENS:
        raise ConfigError(f"{what} must be in [0, {MAX_TOKENS}], got {value!r}")
    return value


def check_id(value: str, what: str) -> str:
    """``value`` if it is 1 to MAX_ID_CHARS printable characters, else ``ConfigError``.

    Printable excludes control characters, line breaks and lone surrogates (which no
    database driver can encode); the error never repeats a long or binary value whole.
    """
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {type(value).__name__}")
    if not 0 < len(value) <= MAX_ID_CHARS:
        raise ConfigError(f"{what} must be 1 to {MAX_ID_CHARS} characters, got {len(value)}")
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        raise ConfigError(
            f"{what} must be printable characters (no control characters, line breaks or lone "
            f"surrogates); found U+{ord(bad):04X}"
        )
    return value
