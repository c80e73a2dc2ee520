"""A fake vLLM server for VLLMPolicy's tests: the OpenAI-compatible routes the policy uses,
over real HTTP (stdlib server in a thread), sampling with its own copy of the model.

``/v1/completions`` takes token-id prompts and answers ``token_ids`` and log-probs as vLLM
0.32 does; ``/collective_rpc`` ``reload_weights`` loads the folder it names into the copy;
``/reset_prefix_cache`` and ``/v1/load_lora_adapter`` are recorded. ``mode`` breaks it on
purpose: "no_token_ids", "short_logprobs", "not_json", "error_500", "slow", "bad_ids",
"other_tokenizer", "no_dev_mode".
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch
from corl_graph.training._sampling import sample_batch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class FakeVLLM:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str = "served"
    max_model_len: int = 2048
    mode: str = ""
    delay_s: float = 0.0
    completions: list[dict[str, Any]] = field(default_factory=list)
    answers: list[list[int]] = field(default_factory=list)
    rpcs: list[dict[str, Any]] = field(default_factory=list)
    resets: int = 0
    loras: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if path == "/v1/models":
            names = [self.name, *(x["lora_name"] for x in self.loras)]
            return 200, {"data": [{"id": n, "max_model_len": self.max_model_len} for n in names]}
        if path == "/tokenize":
            ids = list(self.tokenizer(body["prompt"], add_special_tokens=False)["input_ids"])
            if self.mode == "other_tokenizer":
                ids = ids[::-1]
            return 200, {"count": len(ids), "tokens": ids}
        if path == "/v1/completions":
            return self._complete(body)
        if path in ("/collective_rpc", "/reset_prefix_cache") and self.mode == "no_dev_mode":
            return 404, {"detail": "Not Found"}
        if path == "/collective_rpc":
            self.rpcs.append(body)
            loaded = AutoModelForCausalLM.from_pretrained(body["kwargs"]["weights_path"])
            with self.lock:
                self.model.load_state_dict(loaded.state_dict())
            return 200, {"results": [None]}
        if path == "/reset_prefix_cache":
            self.resets += 1
            return 200, {"success": True}
        if path == "/v1/load_lora_adapter":
            self.loras.append(body)
            return 200, f"Success: LoRA adapter '{body['lora_name']}' added successfully.".encode()
        return 404, {"detail": "Not Found"}

    def _complete(self, body: dict[str, Any]) -> tuple[int, Any]:
        self.completions.append(body)
        if self.mode == "error_500":
            return 500, {"error": {"message": "EngineCore died"}}
        if self.mode == "slow":
            time.sleep(self.delay_s)
        prompt = body["prompt"]
        gen = torch.Generator().manual_seed(int(body.get("seed", 0)))
        with self.lock:
            ((ids, lps),) = sample_batch(
                self.model,
                [prompt],
                max_new_tokens=int(body["max_tokens"]),
                stop_ids=body["stop_token_ids"],
                pad_id=int(self.tokenizer.pad_token_id),
                temperature=float(body["temperature"]),
                generator=gen,
            )
        self.answers.append(ids)
        if self.mode == "bad_ids":
            ids = [10**6, *ids[1:]]
        choice: dict[str, Any] = {
            "index": 0,
            "text": self.tokenizer.decode(ids),
            "token_ids": ids,
            "logprobs": {"token_logprobs": lps, "tokens": [], "top_logprobs": []},
            "finish_reason": "stop",
        }
        if self.mode == "no_token_ids":
            del choice["token_ids"]
        if self.mode == "short_logprobs":
            choice["logprobs"]["token_logprobs"] = lps[:-1] if len(lps) > 1 else []
        if self.mode == "not_json":
            return 200, b"<html>proxy error</html>"
        return 200, {"choices": [choice], "model": self.name}


def _handler(fake: FakeVLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else {}
            status, payload = fake.handle(method, self.path.split("?")[0], body)
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def fake_vllm(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **kw: Any
) -> Iterator[FakeVLLM]:
    """A running fake server with its own deep copy of ``model``; ``fake.url`` ends in /v1."""
    fake = FakeVLLM(copy.deepcopy(model).eval(), tokenizer, **kw)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
