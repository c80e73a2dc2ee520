"""Trajectory stores: round trip, filters, concurrent appends, torn lines, Router sink."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from pathlib import Path

import pytest
from langchain_core.language_models import FakeListChatModel
from store_workload import append_many

from corl_graph._exceptions import ConfigError, DataFormatError
from corl_graph.experts import ChatModelExpert, PriceSheet
from corl_graph.graph import Router, RouterConfig
from corl_graph.policies import ControllerOnly
from corl_graph.protocol import ExpertCall, StepRecord
from corl_graph.trajectories import (
    JsonlTrajectoryStore,
    Segment,
    SQLiteTrajectoryStore,
    Trajectory,
    open_store,
)


def _traj(i: int, tier: str = "low", tenant: str = "acme", at: float = 1000.0) -> Trajectory:
    return Trajectory(
        query=f"q{i}",
        tier=tier,
        tenant=tenant,
        query_id=f"id{i}",
        policy="p",
        created_at=at,
        segments=[Segment("prompt", "p", (1, 2)), Segment("controller", "c", (3,), (-0.5,))],
        steps=[StepRecord(0, "answer", "4")],
        calls=[ExpertCall("e", "sub", "ok", text="4", answer="4", cost_usd=1e-6)],
        answer="4",
        cost_usd=1e-6,
    )


@pytest.fixture(params=["jsonl-dir", "jsonl-file", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return {
        "jsonl-dir": f"jsonl:///{tmp_path}/runs",
        "jsonl-file": str(tmp_path / "runs.jsonl"),
        "sqlite": f"sqlite:///{tmp_path}/runs.db",
    }[request.param]


async def test_round_trip_keeps_segments_masks_and_calls(url: str) -> None:
    store = open_store(url)
    original = _traj(0)
    await store.append(original)
    (back,) = list(store.iter())
    assert back == original
    assert back.loss_mask == [0, 0, 1]
    assert back.segments[1].logprobs == (-0.5,)


async def test_filters_by_tier_tenant_and_time(url: str) -> None:
    store = open_store(url)
    day = 86400.0
    for i, (tier, tenant, at) in enumerate(
        [("low", "a", 10 * day), ("high", "a", 11 * day), ("low", "b", 12 * day)]
    ):
        await store.append(_traj(i, tier, tenant, at))
    assert [t.query_id for t in store.iter(tier="low")] == ["id0", "id2"]
    assert [t.query_id for t in store.iter(tenant="a")] == ["id0", "id1"]
    assert [t.query_id for t in store.iter(since=11 * day)] == ["id1", "id2"]
    assert [t.query_id for t in store.iter(until=11 * day)] == ["id0"]
    assert [t.query_id for t in store.iter(limit=2)] == ["id0", "id1"]


async def test_concurrent_async_appends_are_all_kept(url: str) -> None:
    store = open_store(url)
    await asyncio.gather(*(store.append(_traj(i)) for i in range(40)))
    assert sorted(t.query_id for t in store.iter()) == sorted(f"id{i}" for i in range(40))


@pytest.mark.slow
def test_appends_from_several_processes_never_interleave(url: str) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=append_many, args=(url, w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ids = [t.query_id for t in open_store(url).iter()]
    assert len(ids) == 75 and len(set(ids)) == 75


def test_torn_last_line_is_skipped_but_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    store = JsonlTrajectoryStore(tmp_path / "runs.jsonl")
    store.append_sync(_traj(0))
    with open(store.path, "ab") as fh:
        fh.write(b'{"query": "cut sho')
    assert [t.query_id for t in store.iter()] == ["id0"]
    with open(store.path, "ab") as fh:
        fh.write(b"\n")
    store.append_sync(_traj(1))
    with pytest.raises(DataFormatError, match=":2: not JSON"):
        list(store.iter())


def test_open_store_rejects_bad_urls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no scheme"):
        open_store(str(tmp_path / "runs.txt"))
    with pytest.raises(ConfigError, match="unknown store URL scheme"):
        open_store("redis:///x")
    with pytest.raises(ConfigError, match="three slashes"):
        open_store("sqlite://")
    with pytest.raises(ConfigError, match="would be lost"):
        open_store("sqlite:///:memory:")
    assert isinstance(open_store(f"sqlite:///{tmp_path}/a.db"), SQLiteTrajectoryStore)


async def test_store_append_is_a_router_trajectory_sink(url: str) -> None:
    chat = FakeListChatModel(responses=["It is 4."])
    small = ChatModelExpert("small", chat, PriceSheet(0.1, 0.4))
    store = open_store(url)
    router = Router(
        RouterConfig(experts=[small], policy=ControllerOnly("small")), trajectory_sink=store.append
    )
    await router.arun("What is 2 + 2?", tier="low", tenant="acme", query_id="q")
    (t,) = list(store.iter(tenant="acme"))
    assert t.answer == "4" and t.calls[0].expert == "small" and t.tier == "low"
