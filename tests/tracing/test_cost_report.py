"""The cost report on hand-made trajectories, and the ``corl-graph report`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corl_graph._exceptions import ConfigError
from corl_graph.cli import main
from corl_graph.protocol import ExpertCall
from corl_graph.tracing import summarize
from corl_graph.trajectories import Trajectory


def _run(tier: str, tenant: str, *calls: ExpertCall, stop: str = "answered") -> Trajectory:
    return Trajectory(
        "q",
        tier,
        tenant,
        f"{tier}-{tenant}-{len(calls)}",
        calls=list(calls),
        cost_usd=sum(c.cost_usd for c in calls),
        stop_reason=stop,
    )


def _ok(expert: str, tin: int, tout: int, usd: float) -> ExpertCall:
    return ExpertCall(expert, "q", "ok", input_tokens=tin, output_tokens=tout, cost_usd=usd)


RUNS = [
    _run("low", "acme"),  # controller alone
    _run(
        "low",
        "acme",
        _ok("small", 10, 5, 0.001),
        ExpertCall("big", "q", "denied"),
        stop="budget_exhausted",
    ),  # cap hit
    _run("high", "acme", _ok("small", 10, 5, 0.001), _ok("big", 20, 40, 0.03)),
    _run("high", "globex", ExpertCall("big", "q", "timeout", cost_usd=0.05, estimated=True)),
]


def test_tier_rows() -> None:
    assert [r.key for r in summarize(RUNS).sections["tier"]] == [("high",), ("low",)]
    rows = {r.key[0]: r for r in summarize(RUNS).sections["tier"]}
    low, high = rows["low"], rows["high"]
    assert (low.queries, low.expert_calls, low.denied_calls, low.budget_exhausted) == (2, 1, 1, 1)
    assert low.expert_call_ratio == 0.5
    assert (low.input_tokens, low.output_tokens) == (10, 5)
    assert low.cost_usd == pytest.approx(0.001)
    assert (high.queries, high.expert_calls, high.failed_calls) == (2, 3, 1)
    assert high.expert_call_ratio == 1.0
    assert high.cost_usd == pytest.approx(0.081)
    assert high.cost_per_query == pytest.approx(0.0405)


def test_expert_rows_share_of_all_queries() -> None:
    rows = {r.key[0]: r for r in summarize(RUNS).sections["expert"]}
    big, small = rows["big"], rows["small"]
    # big was asked in 3 runs: denied once, so it was reached in 2 of the 4 runs.
    assert (big.queries, big.expert_calls, big.denied_calls) == (3, 2, 1)
    assert big.expert_call_ratio == 0.5
    assert big.cost_usd == pytest.approx(0.08)
    assert (small.queries, small.expert_call_ratio) == (2, 0.5)
    assert small.cost_usd == pytest.approx(0.002)


def test_combined_grouping_and_total() -> None:
    report = summarize(RUNS, [("tenant", "expert")])
    rows = {r.key: r for r in report.sections["tenant,expert"]}
    assert set(rows) == {("acme", "small"), ("acme", "big"), ("globex", "big")}
    assert rows[("acme", "big")].expert_call_ratio == pytest.approx(1 / 3)  # 1 of 3 acme runs
    assert rows[("globex", "big")].expert_call_ratio == 1.0
    assert report.total.queries == 4
    assert report.total.cost_usd == pytest.approx(0.082)
    assert report.total.denied_calls == 1


def test_empty_and_bad_groupings() -> None:
    assert summarize([]).total.queries == 0
    assert summarize([]).sections["tier"] == ()
    with pytest.raises(ConfigError, match="choose from"):
        summarize(RUNS, [("model",)])


def _write(path: Path) -> None:
    path.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in RUNS), encoding="utf-8")


def test_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path / "runs.jsonl")
    assert main(["report", str(tmp_path / "runs.jsonl"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"]["queries"] == 4
    assert data["total"]["cost_usd"] == pytest.approx(0.082)
    tiers = {tuple(r["key"]): r for r in data["sections"]["tier"]["rows"]}
    assert tiers[("low",)]["budget_exhausted"] == 1
    assert set(data["sections"]) == {"tier", "expert", "tenant"}


def test_cli_table_with_filters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path / "runs.jsonl")
    assert (
        main(["report", str(tmp_path / "runs.jsonl"), "--by", "tier,expert", "--tenant", "acme"])
        == 0
    )
    out = capsys.readouterr().out
    assert "cost_usd" in out and "globex" not in out
    assert out.splitlines()[0].split()[:3] == ["tier", "expert", "queries"]


def test_cli_missing_store_is_a_user_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path / "nope.jsonl")]) == 2
    assert "no trajectory store" in capsys.readouterr().err
