"""The README's main job: `corl-graph demo` routes the bundled queries offline."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from corl_graph.cli import main
from corl_graph.cli._demo import run_demo

ROOT = Path(__file__).resolve().parents[2]


def _readme_main_job() -> list[str]:
    block = ROOT.joinpath("README.md").read_text().split("<!-- ci:setup -->")[1]
    first = next(line for line in block.splitlines() if line and not line.startswith("`"))
    return first.split("&&")[-1].split()  # ".venv/bin/corl-graph demo"


@pytest.mark.slow
def test_readme_main_job_runs_offline_with_zero_cap_violations() -> None:
    argv = _readme_main_job()
    assert Path(argv[0]).name == "corl-graph" and argv[1:] == ["demo"]
    exe = Path(sys.executable).with_name("corl-graph")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": ""}
    out = subprocess.run(
        [str(exe), *argv[1:]], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    rows = [
        line.split()
        for line in out.stdout.splitlines()
        if re.search(r"\s(low|medium|high)\s", line)
    ]
    assert {r[1] for r in rows} == {"low", "medium", "high"}
    assert all(r[-1] == "0" for r in rows), "no query may exceed its cap"
    assert "routing" in out.stderr and "(100%)" in out.stderr  # the progress bar


async def test_demo_reports_per_tier_and_routing_beats_the_controller_alone() -> None:
    reports = await run_demo(limit=60)
    by = {(r.policy.split("(")[0], r.tier): r for r in reports}
    low = by[("neural", "low")]
    assert low.cap_violations == 0 and low.mean_cost_usd <= low.cap_usd
    assert low.accuracy >= by[("controller-only", "low")].accuracy + 0.10
    assert by[("neural", "high")].accuracy >= low.accuracy
    assert by[("neural", "high")].cap_violations == 0


def test_cli_json_output_and_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--limit", "5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {d["tier"] for d in data} == {"low", "medium", "high"}
    with pytest.raises(SystemExit):
        main(["demo", "--limit", "not-a-number"])
    assert main([]) == 2


def test_the_shipped_router_fits_the_demo_pool_and_tiers() -> None:
    from corl_graph.data import DEMO_CONTROLLER, DEMO_MODELS, demo_tiers
    from corl_graph.evaluation import load_bundled_router

    router = load_bundled_router()
    spec = router.spec
    assert set(spec.experts) <= set(DEMO_MODELS) and spec.controller == DEMO_CONTROLLER
    tiers = demo_tiers()
    assert dict(spec.tier_caps_usd) == {t: tiers[t].max_usd_per_query for t in tiers}
    assert spec.notes["max_output_tokens"] == 512 and set(spec.notes["pool"]) == set(DEMO_MODELS)
    # derived numbers only: the kNN index is the shipped embeddings of the train queries
    assert router.arrays["index"].shape == (spec.notes["train_queries"], spec.embed_dim)
