"""A vectorised numpy replica of the graph's routing episode, for training and calibration.

Routing thousands of episodes through LangGraph costs milliseconds each; PPO and the
per-tier calibration need millions of steps. ``ReplaySim`` replays the same recorded
outcomes with the same rules as the graph, so what is learned here carries over:

- a call reserves ``ReplayExpert.worst_case`` and is refused (budget exhausted, the run must
  answer) when that exceeds what is left of the cap; else it costs the recorded cost;
- a reply longer than the expert's ``max_output_tokens`` is truncated: charged at the limit,
  no answer;
- the vote is ``majority_vote`` (most common answer, ties to the priciest expert's);
- correctness is judged as by the harness: a reply whose row records no text by its recorded
  score; else the final answer against the reference where both exist, else the recorded
  score of the expert whose reply was the answer.

``tests/evaluation/test_learned_router.py`` (``test_graph_and_simulation_take_the_same_decisions``)
checks it against the graph query by query on a synthetic table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from corl_graph._exceptions import ConfigError
from corl_graph.experts import ExpertRequest, OutcomeTable, ReplayExpert, normalize_answer
from corl_graph.policies import StepBatch

__all__ = ["EpisodeArrays", "ReplaySim", "episode_arrays", "run_episodes"]

_EPS = 1e-12


@dataclass
class EpisodeArrays:
    """Per-query, per-expert recorded numbers for N queries and K experts."""

    query_ids: list[str]
    answer_id: np.ndarray  # (N, K) answer ids per query (-1: none or truncated)
    reference_id: np.ndarray  # (N,) -1: no reference
    correct: np.ndarray  # (N, K) recorded score
    cost: np.ndarray  # (N, K) what a call costs (truncation applied)
    worst: np.ndarray  # (N, K) what a call reserves
    out_tokens: np.ndarray  # (N, K)
    replied: np.ndarray  # (N, K) the reply has text (rows without text reply a marker)
    textless: np.ndarray  # (N, K) the row records no text: judged by its recorded score
    query_bytes: np.ndarray  # (N,) length of the query the graph is given


def episode_arrays(
    table: OutcomeTable, experts: Sequence[ReplayExpert], query_ids: Sequence[str]
) -> EpisodeArrays:
    """Tabulate what each expert would do on each query."""
    n, k = len(query_ids), len(experts)
    out = EpisodeArrays(
        query_ids=list(query_ids),
        answer_id=np.full((n, k), -1, np.int64),
        reference_id=np.full(n, -1, np.int64),
        correct=np.zeros((n, k)),
        cost=np.zeros((n, k)),
        worst=np.zeros((n, k)),
        out_tokens=np.zeros((n, k)),
        replied=np.zeros((n, k), bool),
        textless=np.zeros((n, k), bool),
        query_bytes=np.zeros(n, np.int64),
    )
    for i, qid in enumerate(query_ids):
        info = table.queries[qid]
        ids: dict[str, int] = {}
        if info.reference is not None:
            out.reference_id[i] = ids.setdefault(normalize_answer(info.reference), 0)
        out.query_bytes[i] = len((info.prompt or qid).encode("utf-8"))
        for j, e in enumerate(experts):
            o = table.outcome(qid, e.model)
            truncated = o.output_tokens > e.max_output_tokens
            out.correct[i, j] = o.correct
            out.out_tokens[i, j] = min(o.output_tokens, e.max_output_tokens)
            out.cost[i, j] = (
                e.price.cost(o.input_tokens, e.max_output_tokens) if truncated else o.cost_usd
            )
            out.worst[i, j] = e.worst_case(ExpertRequest(qid, "", ""))[1]
            out.replied[i, j] = True  # a textless row replies with a marker text
            out.textless[i, j] = not o.has_text
            if o.answer is not None and not truncated:
                out.answer_id[i, j] = ids.setdefault(normalize_answer(o.answer), len(ids))
    return out


class ReplaySim:
    """B parallel episodes over queries ``rows`` of ``arrays``, at caps ``cap``.

    ``est`` is the policy's own worst-case estimate (N, K); ``emb`` (N, E) the embeddings.
    Drive it with ``state()`` -> ``step(actions)`` until ``done`` is all True.
    """

    def __init__(
        self,
        arrays: EpisodeArrays,
        emb: np.ndarray,
        est: np.ndarray,
        price_rank: np.ndarray,
        *,
        rows: np.ndarray,
        tier: np.ndarray,
        cap: np.ndarray,
        log_w: np.ndarray,
    ):
        if not (len(rows) == len(tier) == len(cap) == len(log_w)):
            raise ConfigError(
                "ReplaySim: rows, tier, cap and log_w must have one entry per episode"
            )
        self.a, self.rows = arrays, rows
        b, k = len(rows), arrays.cost.shape[1]
        self.k = k
        self.price_rank = price_rank  # (K,) vote tie-break strength
        self.s = StepBatch(
            emb=emb[rows],
            tier=tier,
            log_w=log_w,
            called=np.zeros((b, k), bool),
            answer_id=np.full((b, k), -1, np.int64),
            replied=np.zeros((b, k), bool),
            out_tokens=np.zeros((b, k)),
            spent=np.zeros(b),
            cap=cap,
            est=est[rows],
            exhausted=np.zeros(b, bool),
        )
        self.order = np.zeros((b, k), np.int64)  # call order, 1-based; 0: not called
        self.done = np.zeros(b, bool)
        self.correct = np.zeros(b)
        self.n_calls = np.zeros(b, np.int64)

    def state(self) -> StepBatch:
        return self.s

    def step(self, actions: np.ndarray) -> None:
        """Apply one action per live episode (finished ones ignore theirs)."""
        live = ~self.done
        k = self.k
        calls = live & (actions >= 1) & (actions <= k)
        if calls.any():
            self._call(np.flatnonzero(calls), actions[calls] - 1)
        answer = live & (actions == 0)
        vote = live & (actions == k + 1)
        for idx, fn in (
            (np.flatnonzero(answer), self._judge_last),
            (np.flatnonzero(vote), self._judge_vote),
        ):
            for i in idx:
                self.correct[i] = fn(int(i))
                self.done[i] = True

    def _call(self, idx: np.ndarray, expert: np.ndarray) -> None:
        s, a, r = self.s, self.a, self.rows[idx]
        worst = a.worst[r, expert]
        denied = worst > s.cap[idx] - s.spent[idx] + _EPS
        s.exhausted[idx[denied]] = True
        ok_i, ok_e, ok_r = idx[~denied], expert[~denied], r[~denied]
        s.called[ok_i, ok_e] = True
        s.spent[ok_i] += a.cost[ok_r, ok_e]
        s.out_tokens[ok_i, ok_e] = a.out_tokens[ok_r, ok_e]
        s.replied[ok_i, ok_e] = a.replied[ok_r, ok_e]
        s.answer_id[ok_i, ok_e] = a.answer_id[ok_r, ok_e]
        self.n_calls[ok_i] += 1
        self.order[ok_i, ok_e] = self.n_calls[ok_i]

    def _score(self, i: int, answer_id: int, expert: int) -> float:
        if self.a.textless[self.rows[i], expert]:
            return float(self.a.correct[self.rows[i], expert])
        ref = self.a.reference_id[self.rows[i]]
        if ref >= 0:
            return float(answer_id == ref) if answer_id >= 0 else 0.0
        return float(self.a.correct[self.rows[i], expert])

    def _judge_last(self, i: int) -> float:
        replied = np.flatnonzero(self.s.replied[i])
        if len(replied) == 0:
            return 0.0
        last = replied[self.order[i, replied].argmax()]
        return self._score(i, int(self.s.answer_id[i, last]), int(last))

    def _judge_vote(self, i: int) -> float:
        ans = self.s.answer_id[i]
        voters = [j for j in np.argsort(self.order[i]) if self.order[i, j] > 0 and ans[j] >= 0]
        if not voters:
            return self._judge_last(i)
        counts: dict[int, int] = {}
        strength: dict[int, float] = {}
        for j in voters:  # insertion order = call order, as Counter's in the graph
            counts[int(ans[j])] = counts.get(int(ans[j]), 0) + 1
            strength[int(ans[j])] = max(strength.get(int(ans[j]), -1.0), float(self.price_rank[j]))
        best = max(counts, key=lambda v: (counts[v], strength[v]))
        expert = next(j for j in voters if ans[j] == best)
        return self._score(i, best, int(expert))


def run_episodes(
    act: Callable[[StepBatch], np.ndarray], sim: ReplaySim, *, max_steps: int | None = None
) -> ReplaySim:
    """Play every episode of ``sim`` to its end with ``act`` (e.g. a greedy policy)."""
    limit = max_steps or sim.k + 2
    for step in range(limit):
        if sim.done.all():
            break
        actions = act(sim.state())
        if step == limit - 1:  # out of steps: answer with what there is
            actions = np.where(actions == sim.k + 1, actions, 0)
        sim.step(actions)
    return sim
