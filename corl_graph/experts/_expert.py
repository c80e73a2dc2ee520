"""An expert: something that answers a sub-query, with a price sheet and call limits."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from corl_graph._exceptions import ConfigError
from corl_graph.budget import Usage, provider_usage
from corl_graph.protocol import ExpertDescriptor, is_valid_name

if TYPE_CHECKING:
    from corl_graph.experts._tools import ChatRequest

__all__ = [
    "Expert",
    "ExpertReply",
    "ExpertRequest",
    "PriceSheet",
    "estimate_tokens",
    "input_token_bound",
]

# Chat templates wrap each message in a few special tokens; 16 covers the common templates.
_MESSAGE_OVERHEAD_TOKENS = 16


def input_token_bound(text: str) -> int:
    """An upper bound on the tokens of ``text`` in one chat message.

    Byte-level BPE tokenizers (GPT, Llama, Qwen, Mistral) never emit more tokens than UTF-8
    bytes, so reserving by bytes cannot under-reserve, whatever the provider's tokenizer.
    """
    return len(text.encode("utf-8")) + _MESSAGE_OVERHEAD_TOKENS


def estimate_tokens(text: str) -> int:
    """A typical token count (about 3 bytes a token), used when a provider reports no usage."""
    return math.ceil(len(text.encode("utf-8")) / 3)


@dataclass(frozen=True, slots=True)
class PriceSheet:
    """Dollars per million input and output tokens.

    >>> PriceSheet(0.15, 0.60).cost(1000, 500)
    0.00045
    """

    input_usd_per_mtok: float
    output_usd_per_mtok: float

    def __post_init__(self) -> None:
        for field, value in (
            ("input_usd_per_mtok", self.input_usd_per_mtok),
            ("output_usd_per_mtok", self.output_usd_per_mtok),
        ):
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"PriceSheet.{field} must be a finite number >= 0, got {value!r}")

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok
        ) / 1e6


@dataclass(frozen=True, slots=True)
class ExpertRequest:
    """One call: the sub-query, and the query it serves (replayed experts key on ``query_id``).

    ``chat`` carries the caller's chat, tools, response format and sampling options when the
    caller gave them (``corl_graph.experts.ChatRequest``); only experts whose
    ``supports_tools`` is True can serve a request with tools or a JSON format.
    """

    query_id: str
    query: str
    subquery: str
    chat: ChatRequest | None = None

    @property
    def max_output_tokens(self) -> int | None:
        """The caller's own output cap (``max_tokens``), if it gave one."""
        return self.chat.max_tokens if self.chat is not None else None


@dataclass(frozen=True, slots=True)
class ExpertReply:
    """What came back. ``cost_usd`` is set when the source knows it better than the price sheet
    (recorded outcomes); ``answer`` when the source has an extracted answer already."""

    text: str
    input_tokens: int
    output_tokens: int
    estimated: bool = False
    finish_reason: str | None = None
    response_model: str | None = None
    answer: str | None = None
    cost_usd: float | None = None
    tool_calls: Sequence[Mapping[str, Any]] = ()


class Expert(ABC):
    """Base of all experts: name, prices, and the limits that every call obeys.

    ``max_output_tokens`` is enforced on the call and used for the worst-case reservation
    (a caller's lower ``max_tokens`` lowers both);
    ``timeout_s`` bounds one attempt; ``max_retries`` more attempts follow a failure, each
    reserved and settled on its own so a retry never double-charges.
    """

    provider: str = "unknown"
    # Whether the expert can take tools and JSON response formats (ChatRequest); recorded
    # outcomes cannot, so a run that needs them is refused before anything is spent.
    supports_tools: bool = False

    def __init__(
        self,
        name: str,
        price: PriceSheet,
        *,
        description: str = "",
        max_output_tokens: int = 1024,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        retry_backoff_s: float = 0.5,
    ):
        if not is_valid_name(name):
            raise ConfigError(
                f"expert name {name!r} must be 1-128 characters of letters, digits and ._:/@+-"
            )
        if max_output_tokens <= 0:
            raise ConfigError(f"expert {name!r}: max_output_tokens must be > 0")
        if not timeout_s > 0:
            raise ConfigError(f"expert {name!r}: timeout_s must be > 0, got {timeout_s!r}")
        if max_retries < 0 or retry_backoff_s < 0:
            raise ConfigError(f"expert {name!r}: max_retries and retry_backoff_s must be >= 0")
        self.name = name
        self.price = price
        self.description = description
        self.max_output_tokens = max_output_tokens
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s

    @property
    def descriptor(self) -> ExpertDescriptor:
        return ExpertDescriptor(
            self.name,
            self.price.input_usd_per_mtok,
            self.price.output_usd_per_mtok,
            self.description,
            self.max_output_tokens,
        )

    def worst_case_input_tokens(self, request: ExpertRequest) -> int:
        """Upper bound on the input tokens of ``request``; replayed experts know them exactly."""
        return input_token_bound(request.subquery)

    def output_token_cap(self, request: ExpertRequest) -> int:
        """The most output tokens this call may produce: the expert's limit, or the caller's
        ``max_tokens`` when lower."""
        cap = request.max_output_tokens
        return self.max_output_tokens if cap is None else min(cap, self.max_output_tokens)

    def worst_case(self, request: ExpertRequest) -> tuple[int, float]:
        """(input-token bound, dollars) to reserve before calling."""
        tokens = self.worst_case_input_tokens(request)
        return tokens, self.price.cost(tokens, self.output_token_cap(request))

    def cost_of(self, reply: ExpertReply) -> float:
        if reply.cost_usd is not None:
            return reply.cost_usd
        return self.price.cost(reply.input_tokens, reply.output_tokens)

    def usage_of(
        self, reply: ExpertReply, input_tokens: int, reserved_usd: float
    ) -> tuple[Usage, ExpertReply]:
        """What to settle ``reply`` with, and the reply as it was charged.

        A provider's report that cannot be true (negative, NaN or absurd counts or cost) is
        charged at the reserved worst case (``input_tokens`` + ``max_output_tokens``,
        ``reserved_usd``) and flagged for the audit trail, so a broken or hostile endpoint can
        never lower a tenant's bill; the returned reply then carries the charged counts.
        """
        try:
            cost: object = self.cost_of(reply)
        except (TypeError, ValueError, OverflowError):
            cost = float("nan")
        usage = provider_usage(
            reply.input_tokens,
            reply.output_tokens,
            cost,
            estimated=reply.estimated,
            reserved_usd=reserved_usd,
            reserved_input_tokens=input_tokens,
            reserved_output_tokens=self.max_output_tokens,
        )
        if usage.flagged:
            reply = replace(
                reply,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                estimated=True,
                cost_usd=usage.cost_usd,
            )
        return usage, reply

    @abstractmethod
    async def agenerate(self, request: ExpertRequest) -> ExpertReply:
        """One attempt, without timeout or retry (the caller adds both)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
