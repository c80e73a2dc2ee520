"""A loopback HTTP server that fakes an OpenAI-compatible chat endpoint, fault by fault.

Each model name has a ``Behavior``: the status code to answer with, a delay, the reply text
(or a function of the request's messages), the finish reason, whether usage is reported, and
whether the connection is cut half way through the body. Real clients (``ChatOpenAI`` with
``max_retries=0``, ``openai``) talk to it over TCP on 127.0.0.1, so their whole transport path
runs. It lives on its own thread and event loop, so sync test code can use it too.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Reply = str | Callable[[list[dict[str, Any]]], str]


@dataclass
class Behavior:
    """How the fake answers one model. ``fail_first`` requests get ``status`` then 200s."""

    content: Reply = "The answer is 4."
    status: int = 200
    fail_first: int | None = None
    delay_s: float = 0.0
    finish_reason: str = "stop"
    usage: bool = True
    prompt_tokens: int = 12
    completion_tokens: int = 6
    cut: bool = False  # send half the body, then close the connection
    calls: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)


class FakeOpenAI:
    """``with FakeOpenAI() as fake: fake.behave("m", Behavior(status=429)); fake.base_url``."""

    def __init__(self) -> None:
        self.behaviors: dict[str, Behavior] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    def behave(self, model: str, behavior: Behavior) -> Behavior:
        self.behaviors[model] = behavior
        return behavior

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            # Handlers still sleeping (slow behaviors) belong to clients that gave up.
            for task in asyncio.all_tasks(self._loop):
                if task is not asyncio.current_task():
                    task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        body = json.loads(await reader.readexactly(length)) if length else {}
        behavior = self.behaviors.get(str(body.get("model")), Behavior(status=404))
        behavior.calls += 1
        behavior.requests.append(body)
        if behavior.delay_s:
            await asyncio.sleep(behavior.delay_s)
        failing = behavior.fail_first is None or behavior.calls <= behavior.fail_first
        status = behavior.status if failing else 200
        payload = _payload(behavior, body) if status == 200 else _error(status)
        data = json.dumps(payload).encode()
        reason = {200: "OK", 429: "Too Many Requests", 500: "Internal Server Error"}
        headers = (
            f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
        )
        if behavior.cut and status == 200:
            writer.write(headers.encode() + data[: len(data) // 2])
            await writer.drain()
            return False  # the caller closes the connection mid-body
        writer.write(headers.encode() + data)
        await writer.drain()
        return True


def _payload(behavior: Behavior, body: dict[str, Any]) -> dict[str, Any]:
    messages = list(body.get("messages") or [])
    content = behavior.content(messages) if callable(behavior.content) else behavior.content
    out: dict[str, Any] = {
        "id": f"chatcmpl-{behavior.calls}",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "finish_reason": behavior.finish_reason,
                "message": {"role": "assistant", "content": content},
            }
        ],
    }
    if behavior.usage:
        out["usage"] = {
            "prompt_tokens": behavior.prompt_tokens,
            "completion_tokens": behavior.completion_tokens,
            "total_tokens": behavior.prompt_tokens + behavior.completion_tokens,
        }
    return out


def _error(status: int) -> dict[str, Any]:
    code = {429: "rate_limit_exceeded", 500: "server_error"}.get(status, "error")
    return {"error": {"message": f"fake {status}", "type": code, "code": code, "param": None}}
