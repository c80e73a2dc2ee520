"""ServerConfig: the one typed configuration of ``corl-graph serve``, loadable from JSON or TOML.

A minimal TOML file::

    ledger_url = "sqlite:///corl-ledger.db"

    [[experts]]
    kind = "openai"                      # any OpenAI-compatible endpoint
    name = "small"
    model = "gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"
    price = { input_usd_per_mtok = 0.15, output_usd_per_mtok = 0.6 }

    [policy]
    kind = "cascade"
    experts = ["small"]

    [[tenants]]
    name = "acme"
    limit_usd = 50.0
    period = "month"
    api_key_envs = ["ACME_API_KEY"]

See docs/integrations.md for every field.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from corl_graph._exceptions import ConfigError
from corl_graph.budget import BudgetTier, HoldMode, Ledger, TierSet, default_tiers, open_ledger
from corl_graph.experts import ChatModelExpert, Expert, OutcomeTable, PriceSheet, ReplayExpert
from corl_graph.graph import RouterConfig
from corl_graph.policies import AlwaysExpert, Cascade, ControllerOnly, LLMPolicy, Policy

from ._server_tracing import TracingConfig

__all__ = [
    "OpenAIExpertConfig",
    "PolicyConfig",
    "RateLimitConfig",
    "ReplayExpertConfig",
    "ServerConfig",
    "TenantConfig",
    "TierConfig",
]


class _Strict(BaseModel):
    # A misspelt key must fail loudly rather than silently take a default; Infinity or NaN
    # (which TOML and JSON parsers accept) in any number field is refused when the file loads.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PriceConfig(_Strict):
    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)


class OpenAIExpertConfig(_Strict):
    """An expert behind an OpenAI-compatible endpoint (OpenAI, vLLM, Together, Ollama…)."""

    kind: Literal["openai"] = "openai"
    name: str
    model: str
    price: PriceConfig
    base_url: str | None = None
    api_key_env: str | None = None
    description: str = ""
    system_prompt: str | None = None
    max_output_tokens: int = Field(default=1024, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=2, ge=0)

    def build(self) -> Expert:
        from langchain_openai import ChatOpenAI

        model = ChatOpenAI(
            model=self.model,
            base_url=self.base_url,
            api_key=SecretStr(_env_key(self.api_key_env)),
            max_retries=0,
        )
        return ChatModelExpert(
            self.name,
            model,
            PriceSheet(self.price.input_usd_per_mtok, self.price.output_usd_per_mtok),
            description=self.description,
            system_prompt=self.system_prompt,
            max_output_tokens=self.max_output_tokens,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
        )


class ReplayExpertConfig(_Strict):
    """An expert answering from a recorded outcome table (offline demos and evaluation)."""

    kind: Literal["replay"]
    table: Path
    model: str
    name: str | None = None
    description: str = ""

    def build(self, base: Path) -> Expert:
        table = OutcomeTable.load(self.table if self.table.is_absolute() else base / self.table)
        return ReplayExpert(table, self.model, name=self.name, description=self.description)


ExpertConfig = Annotated[OpenAIExpertConfig | ReplayExpertConfig, Field(discriminator="kind")]


class PolicyConfig(_Strict):
    """The controller: a fixed baseline over named experts, or an LLM (e.g. served by vLLM)."""

    kind: Literal["cascade", "always", "controller_only", "llm"] = "cascade"
    experts: list[str] = Field(default_factory=list)
    agree: int = Field(default=2, ge=1)
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    temperature: float = 0.0
    max_tokens: int = Field(default=256, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)

    def build(self, expert_names: list[str]) -> Policy:
        unknown = [n for n in self.experts if n not in expert_names]
        if unknown:  # a baseline over a missing expert would silently fall back to another
            raise ConfigError(
                f"policy.experts names {unknown}, which are not experts of this config "
                f"(experts: {', '.join(expert_names)})"
            )
        names = self.experts or expert_names
        if self.kind == "cascade":
            return Cascade(names, agree=self.agree)
        if self.kind == "always":
            return AlwaysExpert(names)
        if self.kind == "controller_only":
            return ControllerOnly(names[0])
        if not self.model:
            raise ConfigError("policy kind 'llm' needs policy.model (and usually policy.base_url)")
        from langchain_openai import ChatOpenAI

        chat = ChatOpenAI(
            model=self.model,
            base_url=self.base_url,
            temperature=self.temperature,
            max_completion_tokens=self.max_tokens,
            api_key=SecretStr(_env_key(self.api_key_env)),
            max_retries=0,
        )
        return LLMPolicy(chat, timeout_s=self.timeout_s)


class TierConfig(_Strict):
    name: str
    max_usd_per_query: float = Field(ge=0)
    max_expert_calls: int | None = None
    max_tokens_per_query: int | None = None
    # the mean spend per query the tier aims at (a training constraint; the cap is enforced)
    target_usd_per_query: float | None = None
    # the experts a query of this tier may reach at all (None: all); bounds prompt injection
    experts: list[str] | None = None


class TenantConfig(_Strict):
    """A tenant, its period budget and the API keys that act for it (literal or from env)."""

    name: str
    limit_usd: float = Field(ge=0)
    period: Literal["day", "month", "total"] = "month"
    api_keys: list[SecretStr] = Field(default_factory=list)
    api_key_envs: list[str] = Field(default_factory=list)
    # Keys that are refused (401) even if still listed above: revoke a leaked key with one
    # line (serve re-reads it within a second, or on SIGHUP); its spend stays on the books.
    revoked_api_keys: list[SecretStr] = Field(default_factory=list)
    # Tiers (model names without the prefix) this tenant may use and see; None = all.
    allowed_tiers: list[str] | None = None
    # Experts this tenant's queries may reach at all, on every tier (None = all): a call to
    # another is denied before anything is reserved or sent, whatever the controller asks.
    allowed_experts: list[str] | None = None

    @model_validator(mode="after")
    def _ascii_keys(self) -> TenantConfig:
        for key in (*self.api_keys, *self.revoked_api_keys):
            _check_key(key.get_secret_value(), f"tenant {self.name!r}: an API key")
        return self

    def revoked(self) -> set[str]:
        return {k.get_secret_value() for k in self.revoked_api_keys}

    def resolved_keys(self) -> list[str]:
        found = [k.get_secret_value() for k in self.api_keys]
        for env in self.api_key_envs:
            value = os.environ.get(env)
            if not value:
                raise ConfigError(f"tenant {self.name!r}: environment variable {env} is not set")
            _check_key(value, f"tenant {self.name!r}: the API key in {env}", error=ConfigError)
            found.append(value)
        if not found:
            raise ConfigError(f"tenant {self.name!r} has no API key: set api_keys or api_key_envs")
        return found


class RateLimitConfig(_Strict):
    """Per API key: ``requests_per_s`` on average, bursts of up to ``burst`` (token bucket)."""

    requests_per_s: float = Field(gt=0)
    burst: int = Field(default=10, ge=1)
    # redis://host:port/db: buckets shared by every replica and worker using this Redis
    # (pip install 'corl-graph[redis]'); None keeps them in the process.
    redis_url: str | None = None


class ServerConfig(_Strict):
    """Everything ``corl-graph serve`` needs. Load with ``ServerConfig.load(path)``."""

    tenants: list[TenantConfig] = Field(min_length=1)
    experts: list[ExpertConfig] = Field(default_factory=list)
    policy: PolicyConfig = Field(default_factory=lambda: PolicyConfig())
    tiers: list[TierConfig] = Field(default_factory=list)
    default_tier: str | None = None
    ledger_url: str = "sqlite:///corl-ledger.db"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    model_prefix: str = "corl-"
    max_request_bytes: int = Field(default=1_000_000, gt=0)
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    rate_limit: RateLimitConfig | None = None
    query_timeout_s: float | None = Field(default=None, gt=0)
    # "per_query": one ledger hold (the tier's whole cap) per query instead of one per attempt;
    # fewer ledger round trips, but a tenant sees whole caps committed (docs/budget.md).
    # "leased": those holds carved in memory from per-tenant slices of budget_lease_usd.
    budget_hold: HoldMode = "per_attempt"
    budget_lease_usd: float = Field(default=1.0, gt=0)
    max_steps: int = Field(default=8, ge=1)
    record_content: bool = False
    # OTLP export of the router's spans (integrations/_server_tracing.py); None: OTEL_* decide.
    tracing: TracingConfig | None = None
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _unique_tenants(self) -> ServerConfig:
        names = [t.name for t in self.tenants]
        if len(set(names)) != len(names):
            raise ValueError(f"tenant names must be unique, got {names}")
        tiers = [t.name for t in self.tiers] or list(default_tiers())
        for t in self.tenants:
            unknown = sorted(set(t.allowed_tiers or ()) - set(tiers))
            if unknown:
                raise ValueError(
                    f"tenant {t.name!r}: allowed_tiers {unknown} are not tiers "
                    f"(tiers: {', '.join(tiers)})"
                )
        return self

    @classmethod
    def load(cls, path: str | Path) -> ServerConfig:
        """Read a ``.json`` or ``.toml`` file; relative table paths are taken from its folder."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            data: dict[str, Any] = (
                tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read server config {str(path)!r}: {exc}") from exc
        return cls.parse(data, base_dir=path.parent)

    @classmethod
    def parse(cls, data: dict[str, Any], *, base_dir: Path = Path(".")) -> ServerConfig:
        try:
            return cls.model_validate({**data, "base_dir": base_dir})
        except ValidationError as exc:
            raise ConfigError(f"invalid server config: {exc}") from exc

    def api_keys(self) -> dict[str, str]:
        """API key -> tenant; a key shared by two tenants is refused (who would pay?)."""
        owners: dict[str, str] = {}
        for tenant in self.tenants:
            revoked = tenant.revoked()
            for key in tenant.resolved_keys():
                if key in revoked:
                    continue
                if owners.setdefault(key, tenant.name) != tenant.name:
                    raise ConfigError(
                        f"an API key is given to both {owners[key]!r} and {tenant.name!r}"
                    )
        return owners

    def revoked_keys(self) -> set[str]:
        """Every revoked key, of any tenant."""
        return set().union(*(t.revoked() for t in self.tenants))

    def tier_set(self) -> TierSet:
        if not self.tiers:
            return default_tiers()
        return TierSet(
            BudgetTier(
                t.name,
                t.max_usd_per_query,
                t.max_expert_calls,
                t.max_tokens_per_query,
                t.target_usd_per_query,
                t.experts,
            )
            for t in self.tiers
        )

    def open_ledger(self) -> Ledger:
        return open_ledger(self.ledger_url)

    def build_experts(self) -> list[Expert]:
        """The experts this file describes (also what training calls live on a cache miss)."""
        if not self.experts:
            raise ConfigError("the server config has no experts: add [[experts]] entries")
        return [
            e.build() if isinstance(e, OpenAIExpertConfig) else e.build(self.base_dir)
            for e in self.experts
        ]

    def router_config(self, ledger: Ledger) -> RouterConfig:
        """The router this file describes, charging ``ledger``."""
        experts = self.build_experts()
        tiers = self.tier_set()
        names = {e.name for e in experts}
        allow_lists = [(f"tier {t.name!r}", t.experts) for t in self.tiers] + [
            (f"tenant {t.name!r}", t.allowed_experts) for t in self.tenants
        ]
        for owner, allowed in allow_lists:
            unknown = sorted(set(allowed or ()) - names)
            if unknown:
                raise ConfigError(
                    f"{owner}: experts {unknown} are not experts of this config "
                    f"(experts: {', '.join(sorted(names))})"
                )
        return RouterConfig(
            experts=experts,
            policy=self.policy.build([e.name for e in experts]),
            tiers=tiers,
            ledger=ledger,
            max_steps=self.max_steps,
            record_content=self.record_content,
            query_timeout_s=self.query_timeout_s,
            budget_hold=self.budget_hold,
            budget_lease_usd=self.budget_lease_usd,
            default_tier=self.default_tier or next(iter(tiers)),
        )


def _check_key(key: str, what: str, error: type[Exception] = ValueError) -> None:
    """An API key must be visible ASCII (0x21-0x7E): HTTP carries headers as bytes that
    clients send in ASCII, so a key with other characters (or spaces) could never match."""
    if not key or any(not "!" <= c <= "~" for c in key):
        raise error(
            f"{what} holds characters other than visible ASCII (letters, digits, punctuation; "
            "no spaces); such a key can never authenticate: generate it with, e.g., "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )


def _env_key(env: str | None) -> str:
    # Local servers (vLLM, Ollama) accept any key; the client library insists on one.
    return os.environ.get(env, "") if env else "EMPTY"
