"""Files for the ``corl-graph train --traces`` tests: a prepared folder made from routed runs,
a saved tiny controller, and a serve config whose "live" experts replay the toy table."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

from traces_fixtures import TIERS, recorded_store, tiny_controller, toy_experts

from corl_graph.cli import main
from corl_graph.experts import OutcomeTable
from corl_graph.graph import Router, RouterConfig
from corl_graph.policies import ControllerOnly
from corl_graph.trajectories import open_store

TIERS_FLAG = ",".join(f"{t}={TIERS[t].max_usd_per_query}" for t in TIERS)


def write_table(table: OutcomeTable, folder: Path) -> Path:
    """The table as NAME.jsonl.gz + NAME.models.json (what a serve config's replay expert reads)."""
    rows = []
    for qid, q in table.queries.items():
        for m in table.models:
            o = table.outcome(qid, m)
            rows.append(
                dict(
                    query_id=qid,
                    split=q.split,
                    task=q.task,
                    prompt=q.prompt,
                    reference=q.reference,
                    model=m,
                    correct=o.correct,
                    answer=o.answer,
                    response=o.response,
                    input_tokens=o.input_tokens,
                    output_tokens=o.output_tokens,
                    cost_usd=o.cost_usd,
                )
            )
    path = folder / "toy.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    prices = {
        m: {
            "input_usd_per_mtok": p.input_usd_per_mtok,
            "output_usd_per_mtok": p.output_usd_per_mtok,
        }
        for m, p in table.prices.items()
    }
    (folder / "toy.models.json").write_text(json.dumps(prices))
    return path


def live_config(table: OutcomeTable, folder: Path) -> Path:
    """A serve config whose experts are the table's models (replayed: the "live" stand-in)."""
    write_table(table, folder)
    config = {
        "tenants": [{"name": "acme", "limit_usd": 1.0, "api_keys": ["k"]}],
        "experts": [{"kind": "replay", "table": "toy.jsonl.gz", "model": m} for m in table.models],
        "tiers": [{"name": t, "max_usd_per_query": TIERS[t].max_usd_per_query} for t in TIERS],
    }
    path = folder / "serve.json"
    path.write_text(json.dumps(config))
    return path


def save_controller(table: OutcomeTable, folder: Path) -> Path:
    lm, tok = tiny_controller(table)
    lm.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_labels(table: OutcomeTable, path: Path) -> Path:
    with path.open("w") as fh:
        for qid, q in table.queries.items():
            fh.write(json.dumps({"query_id": qid, "reference": q.reference}) + "\n")
    return path


def prepare(store: str, out: Path, labels: Path) -> Path:
    code = main(["traces", "prepare", "--store", store, "--out", str(out), "--labels", str(labels)])
    assert code == 0
    return out


def store_of_both(table: OutcomeTable, folder: Path) -> str:
    """Runs with both experts (cheap on every query, strong on half of them)."""
    return recorded_store(folder, table)


def store_of_strong_only(table: OutcomeTable, folder: Path) -> str:
    """Runs that only ever called the strong expert: every call to the cheap one is a miss."""
    url = str(folder / "strong.jsonl")

    async def record() -> None:
        store = open_store(url)
        router = Router(
            RouterConfig(
                experts=toy_experts(table),
                policy=ControllerOnly("strong"),
                tiers=TIERS,
                default_tier="high",
            ),
            trajectory_sink=store.append,
        )
        for q in sorted(table.queries):
            await router.arun(table.queries[q].prompt or q, tier="high", query_id=q)

    asyncio.run(record())
    return url


def metrics(folder: Path) -> list[dict[str, float]]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]
