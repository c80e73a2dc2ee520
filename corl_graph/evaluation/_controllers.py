"""LLM controllers in the replay benchmark: a model behind an OpenAI-compatible server (vLLM),
or any ``Policy`` (a trained checkpoint run in process is built by ``corl-graph eval
--controller-checkpoint``, which imports the training package; this package never does), as
rows beside the neural policy and baselines.

>>> from corl_graph.testing import FakeChatModel
>>> spec = ControllerSpec("base", LLMPolicy(FakeChatModel(lambda p: "<answer>4</answer>")))
>>> spec.family
'llm:base'
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from corl_graph._exceptions import ConfigError
from corl_graph.policies import LLMPolicy, Policy

__all__ = ["ControllerSpec", "endpoint_controller"]


@dataclass(frozen=True)
class ControllerSpec:
    """A controller to evaluate: its label (the row's policy name and plot legend), the
    policy, how many queries it routes at once (None: the benchmark's concurrency), and what
    to await, on the benchmark's event loop, once it is done (closing an HTTP client)."""

    label: str
    policy: Policy
    concurrency: int | None = None
    aclose: Callable[[], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        if not self.label:
            raise ConfigError("a controller needs a non-empty label")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError(f"controller concurrency must be >= 1, got {self.concurrency}")

    @property
    def family(self) -> str:
        return f"llm:{self.label}"


def endpoint_controller(
    base_url: str,
    model: str,
    *,
    label: str | None = None,
    api_key_env: str | None = None,
    temperature: float = 0.0,
    max_tokens: int = 64,
    timeout_s: float = 60.0,
) -> ControllerSpec:
    """``model`` behind an OpenAI-compatible ``base_url`` (vLLM serving a checkpoint)."""
    import httpx
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    key = os.environ.get(api_key_env, "") if api_key_env else "EMPTY"  # vLLM takes any key
    if api_key_env and not key:
        raise ConfigError(f"environment variable {api_key_env} (the controller's key) is not set")
    # Our own HTTP client, closed on the benchmark's loop when it is done: langchain-openai's
    # default one is shared per process and would outlive the loop its connections use.
    client = httpx.AsyncClient(timeout=timeout_s)
    chat = ChatOpenAI(
        model=model,
        base_url=base_url,
        api_key=SecretStr(key),
        temperature=temperature,
        max_completion_tokens=max_tokens,
        max_retries=0,
        http_async_client=client,
    )
    name = label or model
    policy = LLMPolicy(chat, name=name, timeout_s=timeout_s)
    return ControllerSpec(name, policy, aclose=client.aclose)
