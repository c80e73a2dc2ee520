"""OpenAI's chat-completions wire format: requests in, completions, chunks and errors out.

Errors follow OpenAI's shape, ``{"error": {"message", "type", "code", "param"}}``, with these
statuses::

    400 invalid_request   malformed JSON, a missing field, n > 1, malformed tools, tool_choice,
                          response_format, stop or max_tokens (``param`` names the field),
                          tools asked of replayed experts, non-text content, JSON nested
                          deeper than MAX_JSON_DEPTH, a lone surrogate (``\\ud800``) in any
                          string, a malformed ``metadata.query_id``, two Authorization headers
    401 invalid_api_key   no key, or a key no tenant owns
    404 model_not_found   a model that is not "<prefix><tier>"
    413 request_too_large the body is larger than max_request_bytes
    429 budget_exhausted  the tenant's period budget (or the tier's cap) cannot pay for an
                          answer; type "insufficient_quota" as OpenAI's own quota errors, and
                          ``x-should-retry: false`` so clients do not retry what only more
                          budget can fix
    502 upstream_error    every expert (or the controller) failed
    503 shutting_down     the server is draining for shutdown
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from langchain_core.messages import BaseMessage, convert_to_messages
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corl_graph._exceptions import ConfigError
from corl_graph.budget import check_id
from corl_graph.experts import ChatRequest as ExpertChat
from corl_graph.graph import RouteResult

from ._chat_model import messages_to_query
from ._common import chunk_text, result_metadata
from ._tools import output_tool_calls

__all__ = ["ApiError", "ChatRequest", "completion", "parse_request", "sse_chunks"]

# No chat request nests deeper than this; a deeper body is refused before validation (Python's
# json module and pydantic recurse, so a 2 KB body of 1,000 brackets used to end in a 500).
MAX_JSON_DEPTH = 32
# metadata follows OpenAI's limits; a client query id also lands in every ledger row and, with
# a run suffix, must stay within the ledger's id bound.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_QUERY_ID = 128
# OpenAI's own limits on these fields.
MAX_STOP = 4
MAX_TOOLS = 128


class ApiError(Exception):
    """An error the server answers with, in OpenAI's format."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        code: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
            }
        }


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, type="invalid_request_error", code="invalid_request", param=param)


def budget_exhausted(message: str, *, retry_after_s: float | None = None) -> ApiError:
    """429 ``budget_exhausted``: final (``x-should-retry: false``) when only more budget can
    help; retryable with ``Retry-After`` when calls in flight hold what could free room."""
    if retry_after_s is None:
        return ApiError(
            429,
            message,
            type="insufficient_quota",
            code="budget_exhausted",
            headers={"x-should-retry": "false"},
        )
    return ApiError(
        429,
        message,
        type="insufficient_quota",
        code="budget_exhausted",
        headers={"x-should-retry": "true", "retry-after": str(max(1, round(retry_after_s)))},
    )


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class _FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    arguments: str


class _ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    type: Literal["function"] = "function"
    function: _FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_TextPart] | None = None
    tool_calls: list[_ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        if any(p.type != "text" for p in self.content):
            raise bad_request("only text content is supported", param="messages")
        return "".join(p.text or "" for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class _Function(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class _Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: _Function


class _NamedFunction(BaseModel):
    name: str


class _ToolChoice(BaseModel):
    type: Literal["function"]
    function: _NamedFunction


class _JsonSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class _ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchema | None = None


class ChatRequest(BaseModel):
    """A chat-completions request. The router honours ``tools``, ``tool_choice``,
    ``parallel_tool_calls``, ``response_format``, ``stop``, ``max_tokens`` /
    ``max_completion_tokens`` and ``temperature`` (passed to every expert call; ``stop`` also
    cuts the answer) and ``n`` = 1; a malformed value of any of them is a 400 naming it."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    metadata: dict[str, str] | None = None
    tools: list[_Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["auto", "none", "required"] | _ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: _ResponseFormat | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)

    def messages_in(self) -> list[BaseMessage]:
        """The chat as LangChain messages (tool calls and tool results included)."""
        dumped = [m.model_dump(exclude_none=True) for m in self.messages]
        for i, (d, m) in enumerate(zip(dumped, self.messages, strict=True)):
            d["content"] = m.text()  # refuses non-text content
            if m.role == "tool" and not m.tool_call_id:
                raise bad_request(
                    f"messages.{i}: a tool message needs its tool_call_id",
                    param=f"messages.{i}.tool_call_id",
                )
        try:
            return list(convert_to_messages(dumped))
        except (ValueError, TypeError, KeyError) as exc:  # e.g. arguments that are not JSON
            raise bad_request(f"messages: {exc}", param="messages") from None

    def query(self) -> str:
        query = str(messages_to_query(self.messages_in()))
        if not query.strip():
            raise bad_request("the messages hold no text", param="messages")
        return query

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def expert_chat(self) -> ExpertChat | None:
        """What the experts get beyond the query (None for a plain chat), validated."""
        fmt = None
        if self.response_format is not None and self.response_format.type != "text":
            fmt = self.response_format.model_dump(exclude_none=True, by_alias=True)
        choice = self.tool_choice
        options: dict[str, Any] = {
            "tools": tuple(t.model_dump(exclude_none=True) for t in self.tools or ()),
            "tool_choice": choice.model_dump() if isinstance(choice, BaseModel) else choice,
            "parallel_tool_calls": self.parallel_tool_calls,
            "response_format": fmt,
            "stop": tuple(self.stops()),
            "max_tokens": self.max_completion_tokens or self.max_tokens,
            "temperature": self.temperature,
        }
        tool_turns = any(m.role == "tool" or m.tool_calls for m in self.messages)
        if not any(options.values()) and self.temperature is None and not tool_turns:
            return None
        try:
            return ExpertChat(messages=tuple(self.messages_in()), **options)
        except ConfigError as exc:
            text = str(exc)
            fields = ("tool_choice", "response_format", "max_tokens", "temperature", "tools")
            raise bad_request(text, param=next((f for f in fields if f in text), None)) from None


def parse_request(body: bytes) -> ChatRequest:
    """The request in ``body``, or an ``ApiError`` 400 that names what is wrong; nothing a
    client sends can end in a 500."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise bad_request(f"the body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise bad_request(f"the body is not valid JSON: {exc}") from exc
    _check_tree(data)
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise bad_request(f"{where}: {first['msg']}", param=where or None) from exc
    if request.n != 1:
        raise bad_request("only n=1 is supported", param="n")
    stops = request.stops()
    if len(stops) > MAX_STOP or any(not s for s in stops):
        raise bad_request(f"stop: up to {MAX_STOP} non-empty sequences", param="stop")
    fmt = request.response_format
    if fmt is not None and (fmt.type == "json_schema") != (fmt.json_schema is not None):
        raise bad_request(
            'response_format: "json_schema" (and only it) needs a json_schema object with a "name"',
            param="response_format",
        )
    request.expert_chat()  # tools, tool_choice and the rest checked together: a 400 now
    _check_metadata(request.metadata)
    return request


def _check_tree(data: Any) -> None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH and strings with lone surrogates (JSON's
    ``\\ud800`` escapes decode to them, and nothing downstream can encode them)."""
    todo: list[tuple[Any, int, str]] = [(data, 0, "")]
    while todo:
        value, depth, where = todo.pop()
        if isinstance(value, str):
            if _has_surrogate(value):
                raise bad_request(
                    f"{where or 'the body'}: the text holds a lone UTF-16 surrogate (an unpaired "
                    "\\ud800-\\udfff escape), which is not a character",
                    param=where or None,
                )
            continue
        if not isinstance(value, dict | list):
            continue
        if depth >= MAX_JSON_DEPTH:
            raise bad_request(
                f"the body nests deeper than {MAX_JSON_DEPTH} levels", param=where or None
            )
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            path = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and _has_surrogate(key):
                raise bad_request(
                    f"{where or 'the body'}: a key holds a lone UTF-16 surrogate",
                    param=where or None,
                )
            todo.append((item, depth + 1, path))


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_metadata(metadata: dict[str, str] | None) -> None:
    if not metadata:
        return
    query_id = metadata.get("query_id")
    if query_id is not None:
        try:
            check_id(query_id, "metadata.query_id")
            if len(query_id) > MAX_QUERY_ID:
                raise ConfigError(
                    f"metadata.query_id must be 1 to {MAX_QUERY_ID} characters, got {len(query_id)}"
                )
        except ConfigError as exc:
            raise bad_request(str(exc), param="metadata.query_id") from None
    if len(metadata) > MAX_METADATA_PAIRS:
        raise bad_request(f"metadata: at most {MAX_METADATA_PAIRS} pairs", param="metadata")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY or len(value) > MAX_METADATA_VALUE:
            raise bad_request(
                f"metadata: keys at most {MAX_METADATA_KEY} characters, values at most "
                f"{MAX_METADATA_VALUE}",
                param=f"metadata.{key[:MAX_METADATA_KEY]}",
            )


def _usage(result: RouteResult) -> dict[str, Any]:
    # cost_usd rides along as an extra field; OpenAI clients keep unknown fields.
    return {
        "prompt_tokens": result.input_tokens,
        "completion_tokens": result.output_tokens,
        "total_tokens": result.input_tokens + result.output_tokens,
        "cost_usd": result.cost_usd,
    }


def _wire_calls(result: RouteResult) -> list[dict[str, Any]]:
    """The answer's tool calls in OpenAI's format (arguments as a JSON string)."""
    return [
        {
            "id": c["id"],
            "type": "function",
            "function": {"name": c["name"], "arguments": json.dumps(c["args"])},
        }
        for c in output_tool_calls(result.tool_calls)
    ]


def _cut(text: str, stop: list[str]) -> str:
    cuts = [i for s in stop if (i := text.find(s)) >= 0]
    return text[: min(cuts)] if cuts else text


def completion(result: RouteResult, model: str, stop: list[str] | None = None) -> dict[str, Any]:
    """A ``chat.completion`` object; routing facts under the extension key ``corl``."""
    calls = _wire_calls(result)
    text = _cut(result.answer or "", stop or [])
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls" if calls else "stop",
                "logprobs": None,
                "message": message,
            }
        ],
        "usage": _usage(result),
        "corl": result_metadata(result),
    }


def sse_chunks(
    result: RouteResult, model: str, *, include_usage: bool, stop: list[str] | None = None
) -> Iterator[str]:
    """``chat.completion.chunk`` events for the answer (text, then each tool call as OpenAI
    streams it: id, name and arguments in one delta per call), then ``data: [DONE]``."""
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return f"data: {json.dumps({**base, 'choices': [choice], **extra})}\n\n"

    yield event({"role": "assistant", "content": ""})
    for piece in chunk_text(_cut(result.answer or "", stop or [])):
        yield event({"content": piece})
    calls = _wire_calls(result)
    for i, call in enumerate(calls):
        yield event({"tool_calls": [{"index": i, **call}]})
    yield event({}, "tool_calls" if calls else "stop", corl=result_metadata(result))
    if include_usage:
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': _usage(result)})}\n\n"
    yield "data: [DONE]\n\n"
