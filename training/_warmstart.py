"""Warm start: supervised fine-tuning on the best recorded trajectories per tier, plus BoPO's
boundary trajectories (always-cheapest in the lowest tier, always-strongest in the highest),
with TRL's ``SFTTrainer`` and the loss on controller tokens only.

Recorded runs may come from any controller (a vLLM endpoint, a baseline); their token ids
are not the trainable model's. So each chosen run is *re-enacted* through the graph: a
``ScriptedPolicy`` (an ``HFPolicy`` that writes a given text instead of sampling) replays
the recorded decisions, a ``CachedExpert`` replays the recorded replies, and the run comes
back with the trainable model's chat template and tokens, and the loss mask fixed as each
segment was appended::

    recorded run ──► script (controller texts) ──► Router(ScriptedPolicy, CachedExperts)
      ──► Trajectory(segments, loss_mask) ──► {"input_ids", "assistant_masks"} ──► SFTTrainer
                                                (labels = -100 where assistant_masks == 0)
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from corl_graph._exceptions import ConfigError, PolicyError
from corl_graph.budget import InMemoryLedger, TenantBudget, TierSet
from corl_graph.experts import Expert
from corl_graph.graph import Router, RouterConfig
from corl_graph.policies import Decision, PolicyView
from corl_graph.protocol import StepRecord, escape_text, parse_action, unescape_text
from corl_graph.trajectories import Label, Segment, Trajectory

from ._hf_policy import HFPolicy
from ._rewards import RewardFn, corl_reward, format_penalty
from ._teacher import TierTeacher, teacher_script

__all__ = [
    "ScriptedPolicy",
    "WarmStartExample",
    "boundary_script",
    "recorded_script",
    "select_best",
    "sft_trainer",
    "sft_warm_start",
    "warm_start_examples",
]

Script = Callable[[PolicyView], str]


class ScriptedPolicy(HFPolicy):
    """An ``HFPolicy`` that writes ``scripts[(query_id, tier)](view)`` instead of sampling:
    the same context, segments and masks as a sampled run, with chosen controller text.

    With ``max_new_tokens``, a turn longer than that (a recorded call whose sub-query is the
    whole prompt) is cut to fit: the sub-query becomes the prompt's question section, then
    its longest word prefix that fits, so the model learns a turn it can finish within its
    generation budget; ``shortened`` counts those turns."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        scripts: Mapping[tuple[str, str], Script],
        *,
        max_new_tokens: int | None = None,
    ):
        super().__init__(model, tokenizer, name="scripted", max_new_tokens=max_new_tokens or 64)
        self.scripts = dict(scripts)
        self.budget = max_new_tokens
        self.shortened = 0

    async def decide(self, view: PolicyView) -> Decision:
        script = self.scripts.get((view.query_id, view.tier.name))
        if script is None:
            raise PolicyError(f"no script for query {view.query_id!r} in tier {view.tier.name!r}")
        ids, segments = self.context(view)
        text = self.fit(script(view))
        gen_ids = [*self._encode(text), *self._stops[:1]]  # the model must learn to stop
        turns = [*(t.text for t in view.transcript), text]
        self._remember(self._key(view, turns), ids + gen_ids)
        parsed = parse_action(text, experts=[e.name for e in view.experts])
        return Decision(
            parsed.action,
            raw=text,
            format_error=parsed.error,
            segments=(*segments, Segment("controller", text, tuple(gen_ids))),
        )

    def fit(self, text: str) -> str:
        """``text``, or the same call with a shorter sub-query, within the token budget
        (the end-of-turn token included)."""
        if self.budget is None or len(self._encode(text)) + 1 <= self.budget:
            return text
        m = _CALL.fullmatch(text.strip())
        if m is None:
            return text  # only calls carry free text long enough to matter
        expert, sub = m.group(1), unescape_text(m.group(2))
        q = _QUESTION.search(sub)
        words = (q.group(1) if q else sub).split()
        best = f'<call expert="{expert}">{escape_text(words[0] if words else "solve")}</call>'
        lo, hi = 1, len(words)
        while lo <= hi:  # the longest word prefix that fits
            mid = (lo + hi) // 2
            cand = f'<call expert="{expert}">{escape_text(" ".join(words[:mid]))}</call>'
            if len(self._encode(cand)) + 1 <= self.budget:
                best, lo = cand, mid + 1
            else:
                hi = mid - 1
        self.shortened += 1
        return best


_CALL = re.compile(r'<call expert="([^"]+)">(.*)</call>', re.DOTALL)
_QUESTION = re.compile(r"##\s*Question:\s*(.*?)\s*(?:##\s*Instruction|\Z)", re.DOTALL)


def _render_step(step: StepRecord) -> str:
    if step.raw is not None and not step.format_error:
        return step.raw
    if step.action == "call":  # detail is "expert: sub-query"
        expert, _, sub = step.detail.partition(": ")
        return f'<call expert="{expert}">{escape_text(sub)}</call>'
    if step.action in ("answer", "think"):
        return f"<{step.action}>{escape_text(step.detail)}</{step.action}>"
    return "<aggregate/>"


def recorded_script(trajectory: Trajectory) -> Script:
    """Replays a recorded run's decisions (the action the graph took at each step)."""
    texts = [_render_step(s) for s in trajectory.steps]

    def script(view: PolicyView) -> str:
        if view.step >= len(texts):
            raise PolicyError(f"recorded run {trajectory.trajectory_id} has no step {view.step}")
        return texts[view.step]

    return script


def boundary_script(expert: str) -> Script:
    """BoPO's boundary policy: ask ``expert`` the query, then answer with its answer."""

    def script(view: PolicyView) -> str:
        if not view.calls:
            return f'<call expert="{expert}">{escape_text(view.query)}</call>'
        answers = view.answers
        return f"<answer>{escape_text(answers[-1])}</answer>" if answers else "<aggregate/>"

    return script


def _score(t: Trajectory, label: Label | None, tiers: TierSet, reward_fn: RewardFn) -> float | None:
    """A recorded run's reward: verified against the reference, else the user's feedback
    (gated by the tier cap, as CORL's reward), else None (unlabelled: not used)."""
    if t.tier not in tiers:
        return None
    if label is not None and label.reference is not None:
        return reward_fn(t, label.reference, tiers[t.tier]).reward
    score = label.score(t.trajectory_id) if label is not None else None
    if score is None:
        return None
    gated = corl_reward(score, t.cost_usd, tiers[t.tier].max_usd_per_query)
    return gated + format_penalty(len(t.format_errors))


def select_best(
    trajectories: Iterable[Trajectory],
    labels: Mapping[str, Label],
    tiers: TierSet,
    reward_fn: RewardFn,
    *,
    min_reward: float = 1.0,
) -> list[Trajectory]:
    """Per (query, tier), the recorded run with the highest reward (cheapest on ties),
    kept when its reward reaches ``min_reward``."""
    best: dict[tuple[str, str], tuple[float, float, Trajectory]] = {}
    for t in trajectories:
        r = _score(t, labels.get(t.query_id), tiers, reward_fn)
        if r is None or r < min_reward:
            continue
        key = (t.query_id, t.tier)
        if key not in best or (r, -t.cost_usd) > (best[key][0], -best[key][1]):
            best[key] = (r, t.cost_usd, t)
    return [v[2] for v in best.values()]


@dataclass(frozen=True, slots=True)
class WarmStartExample:
    """One SFT sequence: the trainable model's tokens and its loss mask (1 = controller)."""

    input_ids: list[int]
    assistant_masks: list[int]
    query_id: str
    tier: str
    source: str  # "recorded" or "boundary:<expert>"
    reward: float


async def _enact(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    experts: Sequence[Expert],
    tiers: TierSet,
    jobs: Sequence[tuple[str, str, str, Script]],
    max_new_tokens: int | None = None,
) -> tuple[list[Trajectory], int]:
    scripts = {(q, tier): s for q, _, tier, s in jobs}
    policy = ScriptedPolicy(model, tokenizer, scripts, max_new_tokens=max_new_tokens)
    router = Router(
        RouterConfig(
            experts=list(experts),
            policy=policy,
            tiers=tiers,
            ledger=InMemoryLedger(default_budget=TenantBudget("*", 1e12, "total")),
            default_tier=next(iter(tiers)),
            max_steps=8,
        )
    )
    runs = await asyncio.gather(
        *(router.arun(text, tier=tier, query_id=q) for q, text, tier, _ in jobs)
    )
    return [r.trajectory for r in runs], policy.shortened


def warm_start_examples(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    trajectories: Sequence[Trajectory],
    labels: Mapping[str, Label],
    experts: Sequence[Expert],
    tiers: TierSet,
    reward_fn: RewardFn,
    boundary: bool = True,
    min_reward: float = 1.0,
    max_new_tokens: int | None = None,
    teachers: Mapping[str, TierTeacher] | None = None,
    queries: Mapping[str, str] | None = None,
    teacher_subquery: str = "solve the query",
    seed: int = 0,
) -> list[WarmStartExample]:
    """Re-enact the best recorded run per (query, tier) and, with ``boundary``, the
    always-cheapest run in the lowest tier and the always-strongest in the highest, for
    every query with a reference; keep those whose re-enacted reward reaches ``min_reward``.
    ``experts`` are normally ``CachedExpert``s over the prepared replay cache. With
    ``max_new_tokens`` (the generation budget of the run that follows), every controller
    turn is made to fit it (``ScriptedPolicy.fit``).

    With ``teachers`` (tier -> ``TierTeacher``, e.g. ``tier_teacher`` chosen on training
    data to meet each tier's spend target), every labelled query (of the trajectories and of
    ``queries``, id -> text) also gets one run per teacher's tier: a call with the short
    ``teacher_subquery`` to an expert drawn with the teacher's shares (``seed``), then
    ``<aggregate/>``. Teacher runs are kept whatever their reward: they demonstrate how
    often the tier pays for which expert, and keeping only the correct ones would skew the
    shares towards the stronger expert."""
    if not experts:
        raise ConfigError("warm start needs the experts (CachedExpert over the replay cache)")
    jobs: list[tuple[str, str, str, Script, str]] = [
        (t.query_id, t.query, t.tier, recorded_script(t), "recorded")
        for t in select_best(trajectories, labels, tiers, reward_fn, min_reward=min_reward)
    ]
    texts = {**{t.query_id: t.query for t in trajectories}, **(queries or {})}
    labelled = {
        qid: text
        for qid, text in texts.items()
        if labels.get(qid) is not None and labels[qid].reference is not None
    }
    if boundary:
        by_price = sorted(experts, key=lambda e: (e.price.output_usd_per_mtok, e.name))
        names = list(tiers)
        for qid, text in labelled.items():
            for tier, e in ((names[0], by_price[0]), (names[-1], by_price[-1])):
                jobs.append((qid, text, tier, boundary_script(e.name), f"boundary:{e.name}"))
    jobs += _teacher_jobs(teachers or {}, labelled, tiers, experts, teacher_subquery, seed)
    out: list[WarmStartExample] = []
    # One batch per source keeps (query, tier) script keys unique within a router.
    for src in sorted({j[4] for j in jobs}):
        batch = [j for j in jobs if j[4] == src]
        runs, _ = asyncio.run(
            _enact(model, tokenizer, experts, tiers, [j[:4] for j in batch], max_new_tokens)
        )
        for (qid, _, tier, _, source), run in zip(batch, runs, strict=True):
            label = labels.get(qid)
            r = _score(run, label, tiers, reward_fn)
            keep = source.startswith("teacher:") or (r is not None and r >= min_reward)
            if r is not None and keep and run.token_ids:
                out.append(WarmStartExample(run.token_ids, run.loss_mask, qid, tier, source, r))
    return out


def _teacher_jobs(
    teachers: Mapping[str, TierTeacher],
    queries: Mapping[str, str],
    tiers: TierSet,
    experts: Sequence[Expert],
    subquery: str,
    seed: int,
) -> list[tuple[str, str, str, Script, str]]:
    import random

    known = {e.name for e in experts}
    for tier, teacher in teachers.items():
        if tier not in tiers:
            raise ConfigError(f"teacher for unknown tier {tier!r}; tiers: {list(tiers)}")
        if missing := sorted(set(teacher.shares) - known):
            raise ConfigError(f"tier {tier!r}'s teacher calls unknown experts {missing}")
    rng = random.Random(seed)
    jobs = []
    for qid, text in sorted(queries.items()):
        for tier, teacher in teachers.items():
            expert = teacher.draw(rng)
            jobs.append((qid, text, tier, teacher_script(expert, subquery), f"teacher:{expert}"))
    return jobs


def sft_trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[WarmStartExample],
    output_dir: str | Path,
    *,
    epochs: float = 1.0,
    learning_rate: float = 5e-5,
    batch_size: int = 4,
    max_length: int = 2048,
    seed: int = 0,
    **sft_kwargs: Any,
) -> Any:
    """TRL's ``SFTTrainer`` over ``examples`` as a pre-tokenized dataset: TRL builds
    ``labels`` from ``assistant_masks`` (-100 where it is 0), so only controller tokens carry
    loss; prompt, expert and observation tokens are context only."""
    if not examples:
        raise ConfigError(
            "no warm-start examples: no recorded run reached min_reward and no boundary run "
            "was correct; add labels (--labels) or lower min_reward"
        )
    from datasets import Dataset
    from trl.trainer.sft_config import SFTConfig  # trl's top level does not re-export for mypy
    from trl.trainer.sft_trainer import SFTTrainer

    data = Dataset.from_list(
        [{"input_ids": e.input_ids, "assistant_masks": e.assistant_masks} for e in examples]
    )
    args = SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        max_length=max_length,
        seed=seed,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        use_cpu=not _cuda(),
        # TRL defaults to bf16 autocast even on a CPU, where without bf16 hardware it is
        # emulated and slow (a SmolLM2-135M step ran at 4 tokens/s): bf16 only on a GPU
        # that has it, unless the caller says otherwise. TRL also defaults to
        # checkpointing, which transformers 5 flags as deprecated under the old name;
        # small controllers do not need it (pass activation_checkpointing=True).
        **{"bf16": _bf16_gpu(), "activation_checkpointing": False, **sft_kwargs},
    )
    if tokenizer.pad_token is None:  # TRL pads with it; an eos pad is masked out anyway
        tokenizer.pad_token = tokenizer.eos_token
    return SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)


def sft_warm_start(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[WarmStartExample],
    output_dir: str | Path,
    **kwargs: Any,
) -> Any:
    """``sft_trainer(...).train()``, then a ``save_pretrained`` folder (model + tokenizer)
    at ``output_dir`` that transformers, PPO/GRPO and vLLM load. Returns the trainer."""
    trainer = sft_trainer(model, tokenizer, examples, output_dir, **kwargs)
    trainer.train()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return trainer


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _bf16_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
