"""The one exception tree of corl_graph.

Two families: a *user error* means the caller must change something (config, arguments,
a missing file); a *run error* happens while routing a query and is, inside the graph,
turned into an observation for the controller wherever it can be::

    CorlError
    ├── ConfigError                 bad configuration or misuse; the message names the fix
    │   ├── UnknownExpertError      a name that is not in the expert pool
    │   ├── UnknownTierError        a tier name that is not configured
    │   ├── UnknownTenantError      a tenant the ledger does not know
    │   ├── DataFormatError         a table or file that is not in the expected format
    │   └── ToolsUnsupportedError   tools / a JSON format asked of an expert that cannot take them
    └── RunError                    something failed while a query was being routed
        ├── BudgetExceededError     a reservation was refused: query or tenant cap reached
        ├── ExpertError             an expert call failed after its retries
        │   └── ExpertTimeoutError  ... because it ran past its timeout
        ├── PolicyError             the controller could not produce a decision at all
        ├── LedgerError             the ledger's storage failed (dead database, corrupt file)
        └── QueryTimeoutError       the query ran past ``RouterConfig.query_timeout_s``

Catch ``CorlError`` to catch everything the library raises on purpose.
"""

from __future__ import annotations

__all__ = [
    "BudgetExceededError",
    "ConfigError",
    "CorlError",
    "DataFormatError",
    "ExpertError",
    "ExpertTimeoutError",
    "LedgerError",
    "PolicyError",
    "QueryTimeoutError",
    "RunError",
    "ToolsUnsupportedError",
    "UnknownExpertError",
    "UnknownTenantError",
    "UnknownTierError",
]


class CorlError(Exception):
    """Base of every error corl_graph raises on purpose."""


class ConfigError(CorlError, ValueError):
    """Bad configuration or misuse of the API; the message says what to change."""


class UnknownExpertError(ConfigError, KeyError):
    """An expert name that is not in the pool."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownTierError(ConfigError, KeyError):
    """A budget tier that is not configured."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownTenantError(ConfigError, KeyError):
    """A tenant the ledger does not know."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DataFormatError(ConfigError):
    """A file or table that is not in the expected format."""


class ToolsUnsupportedError(ConfigError):
    """Tools or a JSON response format asked of an expert that cannot take them (a replayed
    expert has no tool data; a chat model without ``bind_tools``)."""


class RunError(CorlError, RuntimeError):
    """Something failed while a query was being routed."""


class BudgetExceededError(RunError):
    """A reservation was refused because a cap would be exceeded.

    ``scope`` says which cap: ``"query"``, ``"tenant"``, ``"calls"`` or ``"tokens"``.
    """

    def __init__(self, message: str, *, scope: str, requested_usd: float, remaining_usd: float):
        super().__init__(message)
        self.scope = scope
        self.requested_usd = requested_usd
        self.remaining_usd = remaining_usd


class ExpertError(RunError):
    """An expert call failed after its retries."""

    def __init__(self, message: str, *, expert: str, attempts: int = 1):
        super().__init__(message)
        self.expert = expert
        self.attempts = attempts


class ExpertTimeoutError(ExpertError):
    """An expert call ran past its timeout."""


class PolicyError(RunError):
    """The controller could not produce a decision (for example its endpoint is down)."""


class LedgerError(RunError):
    """The ledger's storage failed: a dead database, a corrupt file, a lost connection."""


class QueryTimeoutError(RunError):
    """A query ran past its deadline (``RouterConfig.query_timeout_s``) with no answer.

    ``timeout_s`` is the deadline that was exceeded.
    """

    def __init__(self, message: str, *, timeout_s: float):
        super().__init__(message)
        self.timeout_s = timeout_s
