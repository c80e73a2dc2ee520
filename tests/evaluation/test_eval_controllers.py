"""``corl-graph eval`` with LLM controllers: a trained checkpoint, its base and a served model
appear as rows next to the baselines, per tier, in the same JSON table and plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eval_controller_files import (
    CAPS,
    fake_openai,
    write_checkpoint,
    write_embeddings,
    write_table,
)

from corl_graph.cli import main


def _controller_reply(messages: list[dict[str, Any]]) -> str:
    # call the strong expert once, then vote on what came back (the system prompt shows the
    # reply format as <expert name="NAME">, so look for this expert's name)
    seen = any('<expert name="s">' in str(m.get("content")) for m in messages)
    return "<aggregate/>" if seen else '<call expert="s">What is it times 3?</call>'


def test_eval_puts_llm_controllers_beside_the_baselines(tmp_path: Path) -> None:
    table = write_table(tmp_path)
    emb = write_embeddings(tmp_path)
    trained = write_checkpoint(tmp_path / "run" / "final", seed=1)
    base = write_checkpoint(tmp_path / "base", seed=2)
    fake = fake_openai()
    with fake.FakeOpenAI() as server:
        served = server.behave("ctl", fake.Behavior(content=_controller_reply))
        code = main(
            [
                "eval", str(table), "--pool", "c,s", "--caps", CAPS, "--embeddings", str(emb),
                "--out", str(tmp_path / "out"), "--no-sweeps", "--limit", "2",
                "--controller-checkpoint", str(trained),
                "--controller-checkpoint", f"base={base}",
                "--controller-url", f"vllm={server.base_url}", "--controller-model", "ctl",
                "--controller-max-tokens", "4", "--controller-batch", "2",
            ]
        )  # fmt: skip
    assert code == 0
    result = json.loads((tmp_path / "out" / "replay_toy.json").read_text())
    assert (tmp_path / "out" / "replay_toy.png").is_file()
    by_family: dict[str, list[dict[str, Any]]] = {}
    for row in result["rows"]:
        by_family.setdefault(row["family"], []).append(row)
    for family in ("llm:run/final", "llm:base", "llm:vllm"):
        rows = by_family[family]
        assert sorted(r["tier"] for r in rows) == ["high", "low"]
        for r in rows:
            assert r["role"] == "tier" and r["queries"] == 2
            assert 0.0 <= r["accuracy"] <= 1.0 and r["mean_cost_usd"] >= 0.0
            assert 0.0 <= r["expert_call_ratio"] <= 1.0
            assert r["cap_violations"] == 0
        assert family in result["aiq"]
    assert {"single", "knn", "threshold", "oracle", "cascade"} <= set(by_family)
    # the served controller called the strong expert where the cap allowed it and voted
    vllm = {r["tier"]: r for r in by_family["llm:vllm"]}
    assert vllm["high"]["accuracy"] == 1.0 and vllm["high"]["expert_call_ratio"] == 1.0
    assert served.calls >= 2 * 2 * 2  # 2 queries x 2 tiers x (call, aggregate)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--controller-url", "http://x/v1"], "go together"),
        (["--controller-model", "m"], "go together"),
        (
            [
                *("--controller-url", "http://a/v1", "--controller-url", "http://b/v1"),
                *(
                    "--controller-model",
                    "m1",
                    "--controller-model",
                    "m2",
                    "--controller-model",
                    "m3",
                ),
            ],
            "one model per URL",
        ),
        (["--controller-checkpoint", "no/such/dir"], "not a save_pretrained folder"),
    ],
)
def test_controller_flags_are_checked(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = write_table(tmp_path)
    code = main(["eval", str(table), "--pool", "c,s", "--caps", CAPS, *extra])
    assert code == 2
    assert message in capsys.readouterr().err
