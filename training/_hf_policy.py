"""HFPolicy: a trainable Hugging Face causal LM as the graph's controller, generating in process.

Each decision renders the chat with the tokenizer's chat template and returns, in
``Decision.segments``, exactly the tokens the model saw and wrote::

    step 0:  prompt (system + user turn + assistant header)  mask 0 │ controller  mask 1
    step k:  observation (end of turn, user turn, header)   mask 0 │ controller  mask 1

The concatenation of all segments of a run IS the model's context, token for token, because
the policy extends its own previous context instead of re-tokenising the transcript.
Concurrent ``decide`` calls (many graph runs under ``asyncio.gather``) are sampled together
in one left-padded batch.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from corl_graph._exceptions import ConfigError
from corl_graph.policies import Decision, PolicyView
from corl_graph.protocol import parse_action, render_system_prompt, render_user_prompt
from corl_graph.trajectories import Segment, SegmentKind

from ._sampling import sample_batch

__all__ = ["HFPolicy"]

_Key = tuple[str, str, tuple[str, ...]]
_SENTINEL = "\x00corl-end-of-content\x00"


class HFPolicy:
    """A causal LM (and its tokenizer with a chat template) implementing ``Policy``.

    >>> from corl_graph.training import tiny_llama, tiny_tokenizer
    >>> tok = tiny_tokenizer(["<answer>4</answer>"], vocab_size=280)
    >>> policy = HFPolicy(tiny_llama(len(tok)), tok, max_new_tokens=4)
    >>> policy.name
    'hf'
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str = "hf",
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        max_batch: int = 64,
        gather_rounds: int = 8,
        seed: int | None = None,
        cache_size: int = 65536,
    ):
        if getattr(tokenizer, "chat_template", None) is None:
            raise ConfigError(
                "HFPolicy needs a tokenizer with a chat_template (set one or "
                "use training.tiny_tokenizer)"
            )
        if tokenizer.eos_token_id is None:
            raise ConfigError("HFPolicy needs a tokenizer with an eos_token (the end of a turn)")
        if max_new_tokens < 1 or temperature < 0:
            raise ConfigError("max_new_tokens must be >= 1 and temperature >= 0 (0: greedy)")
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.max_batch = max_batch
        self.gather_rounds = gather_rounds
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        pad = tokenizer.pad_token_id
        self._pad = int(pad if pad is not None else tokenizer.eos_token_id)
        self._stops = [int(tokenizer.eos_token_id)]
        self._contexts: OrderedDict[_Key, list[int]] = OrderedDict()
        self._cache_size = cache_size
        self._pending: list[tuple[list[int], asyncio.Future[tuple[list[int], list[float]]]]] = []
        self._flush: asyncio.Task[None] | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> HFPolicy:
        """Load a ``save_pretrained`` folder (e.g. ``OUTPUT_DIR/final`` of ``corl-graph
        train``) in float32 (generation switches it to eval mode); ``kwargs`` go to ``HFPolicy``."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        src = Path(path)
        if not (src / "config.json").is_file():
            raise ConfigError(
                f"{str(src)!r} is not a save_pretrained folder (no config.json); give e.g. "
                "OUTPUT_DIR/final of corl-graph train"
            )
        tokenizer = AutoTokenizer.from_pretrained(src)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
        return cls(model, tokenizer, **kwargs)

    # ----------------------------------------------------------------- context building
    def messages(self, view: PolicyView) -> list[dict[str, str]]:
        """The chat at this step, as role/content dicts for the chat template."""
        out = [
            {"role": "system", "content": render_system_prompt(view.experts)},
            {
                "role": "user",
                "content": render_user_prompt(view.query, view.tier.name, view.remaining_usd),
            },
        ]
        for turn in view.transcript:
            out.append(
                {"role": "assistant" if turn.role == "controller" else "user", "content": turn.text}
            )
        return out

    def _render(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
        return str(text)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _key(self, view: PolicyView, transcript: Sequence[str]) -> _Key:
        return (view.query_id, view.tier.name, tuple(transcript))

    def context(self, view: PolicyView) -> tuple[list[int], list[Segment]]:
        """The model's input ids at this step and the new segments (mask 0) they add."""
        messages = self.messages(view)
        full = self._render(messages, generation_prompt=True)
        texts = [t.text for t in view.transcript]
        last_ctrl = max(
            (i for i, t in enumerate(view.transcript) if t.role == "controller"), default=None
        )
        prev = None
        if last_ctrl is not None:
            prev = self._contexts.get(self._key(view, texts[: last_ctrl + 1]))
        if last_ctrl is None or prev is None:  # first step, or a run this policy did not start
            ids = self._encode(full)
            return ids, [Segment("prompt", full, tuple(ids))]
        delta = self._delta(messages[: 2 + last_ctrl + 1], full, prev)
        ids = self._encode(delta)
        kind: SegmentKind = "observation" if last_ctrl < len(texts) - 1 else "prompt"
        return [*prev, *ids], [Segment(kind, delta, tuple(ids))]

    def _delta(self, upto: list[dict[str, str]], full: str, prev: list[int]) -> str:
        """The rendered text after the content of the controller's last turn (its end-of-turn
        marker, observations, the next assistant header), minus an end marker the model
        already wrote. A sentinel after the content finds where the template closes it."""
        marked = [*upto[:-1], {**upto[-1], "content": upto[-1]["content"] + _SENTINEL}]
        end = self._render(marked, generation_prompt=False).find(_SENTINEL)
        if end < 0 or not full.startswith(self._render(marked, False)[:end]):
            end = len(_common_prefix(self._render(upto, generation_prompt=False), full))
        delta = full[end:]
        eos = self.tokenizer.eos_token
        if prev and prev[-1] in self._stops and eos and delta.startswith(eos):
            delta = delta[len(eos) :]
        return delta

    # ----------------------------------------------------------------- deciding
    async def decide(self, view: PolicyView) -> Decision:
        ids, segments = self.context(view)
        gen_ids, logprobs = await self._sample(ids)
        text = self.tokenizer.decode(gen_ids, skip_special_tokens=True)
        if not isinstance(text, str):  # decode returns a list only for a batch of sequences
            raise TypeError(f"the tokenizer decoded one sequence to {type(text).__name__}")
        self._remember(self._key(view, [*(t.text for t in view.transcript), text]), ids + gen_ids)
        parsed = parse_action(text, experts=[e.name for e in view.experts])
        controller = Segment("controller", text, tuple(gen_ids), tuple(logprobs))
        return Decision(
            parsed.action, raw=text, format_error=parsed.error, segments=(*segments, controller)
        )

    async def _sample(self, ids: list[int]) -> tuple[list[int], list[float]]:
        """One turn after ``ids``: (token ids, log-probs). Here: joins the next in-process
        batch; ``VLLMPolicy`` asks a vLLM server instead."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[list[int], list[float]]] = loop.create_future()
        self._pending.append((ids, future))
        if self._flush is None or self._flush.done():
            self._flush = loop.create_task(self._sample_pending())
        return await future

    def _remember(self, key: _Key, ids: list[int]) -> None:
        self._contexts[key] = ids
        self._contexts.move_to_end(key)
        while len(self._contexts) > self._cache_size:
            self._contexts.popitem(last=False)

    async def _sample_pending(self) -> None:
        # Yield a few times so that every run about to decide joins this batch.
        for _ in range(self.gather_rounds):
            await asyncio.sleep(0)
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                results = self.generate([ids for ids, _ in batch])
            except Exception as exc:  # hand the failure to every waiting run
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

    def generate(self, contexts: Sequence[Sequence[int]]) -> list[tuple[list[int], list[float]]]:
        """Sample one turn for each context (blocking; the model runs in eval mode)."""
        was_training = self.model.training
        self.model.eval()
        try:
            return sample_batch(
                self.model,
                contexts,
                max_new_tokens=self.max_new_tokens,
                stop_ids=self._stops,
                pad_id=self._pad,
                temperature=self.temperature,
                generator=self.generator,
            )
        finally:
            self.model.train(was_training)


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]
