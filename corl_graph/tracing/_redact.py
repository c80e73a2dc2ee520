"""Scrub credentials from free text before it goes on a span.

Spans leave the process (Phoenix, Langfuse, a vendor's collector), so anything that could carry
a credential is scrubbed first. The usual carrier is an error message: provider SDKs quote the
rejected key ("Incorrect API key provided: sk-...") and HTTP libraries quote request headers.
Structured values (model names, token counts, dollars) never hold secrets and are not touched.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "redact"]

REDACTED = "[REDACTED]"

_PATTERNS = (
    # OpenAI / Anthropic / most vendors: sk-..., sk-proj-..., sk-ant-...; Langfuse pk-lf-/sk-lf-.
    re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{6,}"),
    # Authorization headers and bearer tokens, whatever the scheme.
    re.compile(r"(?i)\b(?:bearer|basic|token)\s+[A-Za-z0-9._~+/=\-]{8,}"),
    # key=value and "key": "value" forms of anything named like a credential.
    re.compile(
        r"(?i)((?:api[_-]?key|secret(?:[_-]?key)?|password|passwd|access[_-]?token|"
        r"auth(?:orization)?|x-api-key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&}]+"
    ),
    # Credentials embedded in a URL: scheme://user:password@host.
    re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),
)


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``[REDACTED]``.

    >>> redact("Incorrect API key provided: sk-secret-1234567890")
    'Incorrect API key provided: [REDACTED]'
    >>> redact("postgres://app:hunter2@db/corl")
    'postgres://[REDACTED]@db/corl'
    """
    for pattern in _PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        else:
            text = pattern.sub(REDACTED, text)
    return text
