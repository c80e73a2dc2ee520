"""The numpy neural policy: save/load, speed, masks, and that the training simulator
replays the graph exactly."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from corl_graph._exceptions import DataFormatError, PolicyError
from corl_graph.budget import BudgetTier, TierSet
from corl_graph.evaluation import route_queries
from corl_graph.evaluation._sim import ReplaySim, episode_arrays, run_episodes
from corl_graph.experts import OutcomeTable, PriceSheet, replay_experts
from corl_graph.policies import NeuralMeta, NeuralPolicy
from corl_graph.policies._neural import project

DATA = Path(__file__).resolve().parents[2] / "corl_graph" / "data"
TIERS = TierSet([BudgetTier("low", 3e-4), BudgetTier("high", 1e-2)])
E = 8


def _table() -> OutcomeTable:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(40):
        ref = str(i % 5)
        for m, price in (("a", 1.0), ("b", 3.0), ("c", 10.0)):
            ans = ref if rng.random() < {"a": 0.5, "b": 0.7, "c": 0.9}[m] else str(rng.integers(9))
            out = int(rng.integers(5, 40))
            rows.append(
                dict(
                    query_id=f"q{i}",
                    split="test",
                    model=m,
                    correct=float(ans == ref),
                    answer=ans if rng.random() < 0.9 else None,
                    reference=ref,
                    response="r",
                    input_tokens=20,
                    output_tokens=out,
                    cost_usd=(20 + out) * price / 1e6,
                )
            )
    prices = {m: PriceSheet(p, p) for m, p in (("a", 1.0), ("b", 3.0), ("c", 10.0))}
    return OutcomeTable.from_rows(rows, prices=prices, name="synthetic")


def _policy(table: OutcomeTable, seed: int = 0) -> NeuralPolicy:
    experts = replay_experts(table)
    meta = NeuralMeta(
        experts=tuple(e.name for e in experts),
        output_usd_per_mtok=tuple(e.price.output_usd_per_mtok for e in experts),
        input_usd_per_mtok=tuple(e.price.input_usd_per_mtok for e in experts),
        max_output_tokens=tuple(e.max_output_tokens for e in experts),
        tiers=tuple(TIERS),
        tier_caps_usd=tuple(TIERS[t].max_usd_per_query for t in TIERS),
        cost_ref_usd=4e-4,
        typical_input_tokens=20,
        tier_cost_weight={"low": 0.1, "high": 0.01},
        embed_dim=E,
        proj_dim=E,
    )
    rng = np.random.default_rng(seed)
    h = 16
    params = {
        "w1": rng.normal(0, 1, (meta.n_features, h)),
        "b1": np.zeros(h),
        "w2": rng.normal(0, 1, (h, h)),
        "b2": np.zeros(h),
        "w3": rng.normal(0, 1, (h, meta.n_actions)),
        "b3": rng.normal(0, 1, meta.n_actions),
    }
    return NeuralPolicy(params, meta)


def _emb(table: OutcomeTable) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    return {q: rng.normal(size=E).astype(np.float32) for q in sorted(table.queries)}


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_simulator_replays_the_graph(seed: int) -> None:
    table, emb = _table(), _emb(_table())
    policy = _policy(table, seed)
    experts = replay_experts(table)
    ids = sorted(table.queries)
    arrays = episode_arrays(table, experts, ids)
    est = np.stack([policy.meta.estimate_usd(int(b)) for b in arrays.query_bytes])
    vectors = project(policy.params, np.stack([emb[q] for q in ids]))
    for t, tier in enumerate(TIERS):
        outcomes = await route_queries(table, experts, policy, TIERS, tier, features=emb)
        n = len(ids)
        sim = ReplaySim(
            arrays,
            vectors,
            est,
            np.array(policy.meta.output_usd_per_mtok),
            rows=np.arange(n),
            tier=np.full(n, t),
            cap=np.full(n, TIERS[tier].max_usd_per_query),
            log_w=np.full(n, np.log(policy.meta.tier_cost_weight[tier])),
        )
        run_episodes(policy.act, sim)
        assert [o.correct for o in outcomes] == sim.correct.tolist()
        assert [o.cost_usd for o in outcomes] == pytest.approx(sim.s.spent.tolist())
        assert max(o.cost_usd for o in outcomes) <= TIERS[tier].max_usd_per_query


def test_save_load_roundtrip_and_speed(tmp_path: Path) -> None:
    table = _table()
    policy = _policy(table)
    policy.save(tmp_path / "p")
    loaded = NeuralPolicy.load(tmp_path / "p.npz")
    assert loaded.meta == policy.meta
    batch_view = _view(table, loaded)
    batch = loaded.batch(batch_view)
    loaded.act(batch)
    started = time.perf_counter()
    for _ in range(200):
        loaded.act(loaded.batch(batch_view))
    per_step = (time.perf_counter() - started) / 200
    assert per_step < 1e-3, f"{per_step * 1e6:.0f} us per decision"
    with pytest.raises(DataFormatError):
        NeuralPolicy.load(tmp_path / "missing")


def _view(table: OutcomeTable, policy: NeuralPolicy):  # type: ignore[no-untyped-def]
    from corl_graph.policies import PolicyView

    experts = replay_experts(table)
    return PolicyView(
        query="q",
        query_id="q1",
        tier=TIERS["high"],
        tier_names=tuple(TIERS),
        experts=tuple(e.descriptor for e in experts),
        transcript=(),
        steps=(),
        calls=(),
        spent_usd=0.0,
        remaining_usd=1e-2,
        step=0,
        max_steps=8,
        budget_exhausted=False,
        features=tuple([0.1] * E),
    )


async def test_needs_features() -> None:
    table = _table()
    policy = _policy(table)
    view = _view(table, policy)
    from dataclasses import replace

    with pytest.raises(PolicyError):
        await policy.decide(replace(view, features=None))


def test_shipped_policy_loads_without_torch() -> None:
    if not (DATA / "gsm8k_policy.npz").is_file():
        pytest.skip("no shipped policy")
    import subprocess

    code = (
        "import sys; from corl_graph.policies import NeuralPolicy; "
        f"p = NeuralPolicy.load({str(DATA / 'gsm8k_policy')!r}); "
        "assert 'torch' not in sys.modules; print(p.meta.experts)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "gemma" in out.stdout
