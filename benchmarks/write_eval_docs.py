"""Write the results and targets of docs/evaluation.md from benchmarks/results/replay_*.json.

    python benchmarks/write_eval_docs.py        # rewrites the block between the markers

Every figure in the block comes from the JSON files that bench_replay.py wrote, and the
train-only outer CV from router_train_cv.py's benchmarks/results/router_train_cv.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
DOC = ROOT.parent / "docs" / "evaluation.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
FAMILIES = ("single", "knn", "mlp", "mf", "threshold", "cascade", "random", "neural", "oracle")


def _load(name: str) -> dict[str, Any] | None:
    path = ROOT / "results" / f"replay_{name}.json"
    if not path.is_file():
        path = ROOT / "results" / "unseen" / f"replay_{name}.json"
    res = json.loads(path.read_text()) if path.is_file() else None
    return res if res is not None and "fitted" in res else None  # written by this version


def _spread(res: dict[str, Any], key: str) -> str:
    s = res.get("fitted", {}).get("spread", {}).get(key)
    return f"{s['mean']:.3f} ± {s['std']:.3f} (n={s['n']})" if s else "-"


def _tier_rows(res: dict[str, Any]) -> list[str]:
    rows = res["rows"]
    singles = [r for r in rows if r["role"] == "single"]
    best = max(singles, key=lambda r: (r["accuracy"], -r["mean_cost_usd"]))
    ctrl = {r["tier"]: r for r in rows if r["family"] == "controller-only"}
    out = [
        "| tier | cap $ | target $ | neural acc | neural $/query | calls/q | viol | knn acc | "
        "knn $/query | controller-only acc |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for tier, cap in res["tiers"].items():
        n = next((r for r in rows if r["family"] == "neural" and r["role"] == "tier"
                  and r["tier"] == tier), None)  # fmt: skip
        k = next((r for r in rows if r["family"] == "knn" and r["role"] == "tier"
                  and r["tier"] == tier), None)  # fmt: skip
        if n is None:
            continue
        target = res.get("targets", {}).get(tier)
        c = ctrl.get(tier)
        out.append(
            f"| {tier} | {cap:.2e} | {target:.2e} | " if target else f"| {tier} | {cap:.2e} | - | "
        )
        out[-1] += (
            f"{n['accuracy']:.3f} | {n['mean_cost_usd']:.2e} | {n['calls_per_query']:.2f} | "
            f"{n['cap_violations']} | {k['accuracy']:.3f} | {k['mean_cost_usd']:.2e} | "
            f"{c['accuracy']:.3f} |"
            if k and c
            else f"{n['accuracy']:.3f} | {n['mean_cost_usd']:.2e} | {n['calls_per_query']:.2f} | "
            f"{n['cap_violations']} | - | - | - |"
        )
    out.append("")
    out.append(
        f"Best single model on test: {best['policy']} {best['accuracy']:.3f} at "
        f"${best['mean_cost_usd']:.2e}/query."
    )
    return out


def _targets(name: str, res: dict[str, Any]) -> list[str]:
    aiq = res["aiq"]
    base = max(aiq.get("single", 0), aiq.get("knn", 0))
    rows = res["rows"]
    singles = [r for r in rows if r["role"] == "single"]
    best = max(singles, key=lambda r: (r["accuracy"], -r["mean_cost_usd"]))
    tiers = list(res["tiers"])
    neural = {r["tier"]: r for r in rows if r["family"] == "neural" and r["role"] == "tier"}
    ctrl = {r["tier"]: r for r in rows if r["family"] == "controller-only"}
    out = []
    if "neural" in aiq:
        ok = aiq["neural"] > base
        out.append(
            f"- {name}: neural AIQ {aiq['neural']:.3f} vs max(single {aiq['single']:.3f}, kNN "
            f"{aiq['knn']:.3f}) = {base:.3f}: {'above' if ok else 'NOT above'}; gap closed "
            f"{res['gap_closed']:.3f} (goal 0.30: "
            f"{'met' if res['gap_closed'] >= 0.3 else 'missed'})"
            f"; over seeds {_spread(res, 'gap_closed')}"
        )
    high = neural.get(tiers[-1])
    if high:
        ok = high["accuracy"] >= best["accuracy"] and high["mean_cost_usd"] < best["mean_cost_usd"]
        out.append(
            f"  - high tier: {high['accuracy']:.3f} at ${high['mean_cost_usd']:.2e} vs best single "
            f"{best['accuracy']:.3f} at ${best['mean_cost_usd']:.2e}: "
            f"{'met' if ok else 'not met'}"
        )
    low = neural.get(tiers[0])
    if low and tiers[0] in ctrl:
        c = ctrl[tiers[0]]["accuracy"]
        ok = low["accuracy"] >= c + 0.10
        out.append(
            f"  - low tier: {low['accuracy']:.3f} vs controller-only {c:.3f} + 0.10: "
            f"{'met' if ok else 'not met'}"
        )
    viol = sum(r["cap_violations"] for r in rows)
    out.append(f"  - cap violations over all {len(rows)} rows: {viol}")
    return out


def _train_cv() -> list[str]:
    path = ROOT / "results" / "router_train_cv.json"
    if not path.is_file():
        return []
    found = json.loads(path.read_text())["results"]
    out = [
        "### Train-only outer CV (`benchmarks/router_train_cv.py`)",
        "",
        "The router fitted on K-1 outer folds of the train split and scored on the held-out "
        "fold as if it were test (the test split is never read); difference = neural - "
        "max(single-model hull, kNN). Mean ± sd over the folds.",
        "",
        "| table | folds | neural | hull | kNN | oracle | difference per fold | "
        "difference | gap closed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, res in found.items():
        m, s = res["mean"], res["sd"]
        per_fold = " / ".join(f"{r['difference']:+.3f}" for r in res["folds"])
        out.append(
            f"| {key} | {res['n_folds']} | {m['neural']:.3f} | {m['hull']:.3f} | "
            f"{m['knn']:.3f} | {m['oracle']:.3f} | {per_fold} | "
            f"{m['difference']:+.4f} ± {s['difference']:.4f} | "
            f"{m['gap_closed']:.3f} ± {s['gap_closed']:.3f} |"
        )
    return [*out, ""]


def render() -> str:
    found = [
        *(ROOT / "results").glob("replay_*.json"),
        *(ROOT / "results" / "unseen").glob("replay_*.json"),
    ]
    names = sorted(p.stem.removeprefix("replay_") for p in found)
    lines = [BEGIN, ""]
    targets: list[str] = []
    for name in names:
        res = _load(name)
        if res is None or "neural" not in res.get("aiq", {}):
            continue
        unseen = (ROOT / "results" / "unseen" / f"replay_{name}.json").is_file()
        kind = ", derived table (unseen check)" if unseen else ""
        lines.append(
            f"### {name} ({len(res['pool'])} models, controller {res['controller']}{kind})"
        )
        lines.append("")
        lines.append("| " + " | ".join(f for f in FAMILIES if f in res["aiq"]) + " | gap closed |")
        lines.append("| " + " | ".join("---" for f in FAMILIES if f in res["aiq"]) + " | --- |")
        gap = res.get("gap_closed")
        lines.append(
            "| " + " | ".join(f"{res['aiq'][f]:.3f}" for f in FAMILIES if f in res["aiq"])
            + f" | {gap:.3f} |" if gap is not None else " | - |"
        )  # fmt: skip
        lines.append("")
        lines.append(
            f"AIQ over seeds (mean ± std): neural {_spread(res, 'neural')}, kNN "
            f"{_spread(res, 'knn')}, MF {_spread(res, 'mf')}, MLP {_spread(res, 'mlp')}; "
            f"gap closed {_spread(res, 'gap_closed')}. kNN k = {res['fitted'].get('knn_k')} "
            "(5-fold CV on train)."
        )
        lines.append("")
        lines += _tier_rows(res)
        if res.get("routing_vs_2models"):
            lines.append("")
            lines.append("| family | CPT(50%) | CPT(80%) | APGR |")
            lines.append("| --- | --- | --- | --- |")
            for fam, v in res["routing_vs_2models"].items():
                lines.append(f"| {fam} | {v['cpt50']:.2f} | {v['cpt80']:.2f} | {v['apgr']:.3f} |")
        lines.append("")
        targets += _targets(name, res)
    lines += _train_cv()
    lines += ["### Targets: met and not met", "", *targets, "", END]
    return "\n".join(lines)


def main() -> int:
    text = DOC.read_text()
    block = render()
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
    print(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
