"""Turn benchmarks/results/*.json into the README's results table.

    python benchmarks/summarize.py               # print the table
    python benchmarks/summarize.py --write-readme

Every figure comes from a result file; a file that is missing is left out of the table.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
README = Path(__file__).parent.parent / "README.md"
START, END = "<!-- bench:table -->", "<!-- /bench:table -->"

Row = tuple[str, str, str]


def _overhead(d: dict[str, Any]) -> list[Row]:
    r = d["results"]
    rows = []
    for mode in (
        "sequential",
        next((k.split("/")[0] for k in r if k.startswith("concurrent")), ""),
    ):
        bare = r.get(f"{mode}/bare_langgraph")
        if not bare:
            continue
        cpu = f", CPU {bare['cpu_ms']:.1f} ms" if "cpu_ms" in bare else ""
        parts = [f"bare LangGraph {bare['p50_ms']:.1f} ms, {bare['qps']:.0f} q/s{cpu}"]
        for name in (
            "memory_untraced",
            "memory_traced",
            "memory_traced_calls_only",
            "sqlite_traced",
            "sqlite_per_query_traced",
            "sqlite_leased_traced",
            "postgres_traced",
            "postgres_per_query_traced",
            "postgres_leased_traced",
        ):
            x = r.get(f"{mode}/routed_{name}")
            if x:
                label, ratio = name.replace("_", " "), x["ratio_p50_vs_bare"]
                part = f"{label} {x['p50_ms']:.1f} ms (x{ratio:.2f}), {x['qps']:.0f} q/s"
                if "ratio_cpu_vs_bare" in x:  # files from before the CPU column lack them
                    part += f" (x{x['ratio_qps_vs_bare']:.2f}), CPU x{x['ratio_cpu_vs_bare']:.2f}"
                parts.append(part)
        rows.append(
            (
                "orchestration overhead",
                f"p50 per query, throughput, CPU per query; {mode.replace('_', ' ')}",
                "; ".join(parts),
            )
        )
    return rows


def _controller(d: dict[str, Any]) -> list[Row]:
    p = d["p50_ms_per_step"]
    return [
        (
            "controller call path",
            "p50 client overhead per step",
            "; ".join(f"{k} {v:.2f} ms" for k, v in p.items()),
        )
    ]


def _scaling(d: dict[str, Any]) -> list[Row]:
    one = {r["experts"]: r["cpu_ms_per_query"] for r in d["rows"] if r["calls_per_query"] == 1}
    per_call = d["cpu_ms_per_extra_call"]
    return [
        (
            "scaling",
            "CPU per query, 1 call, by pool size",
            "; ".join(f"{k} experts {v:.1f} ms" for k, v in one.items()),
        ),
        (
            "scaling",
            "CPU per extra expert call",
            "; ".join(f"pool {k}: {v:.1f} ms" for k, v in per_call.items()),
        ),
    ]


def _tracing(d: dict[str, Any]) -> list[Row]:
    o = d["overhead_vs_off"]
    return [
        (
            "tracing",
            "added p50 per query vs off",
            "; ".join(
                f"{k} {v['p50_added_ms']:+.1f} ms (x{v['p50_ratio']:.2f})" for k, v in o.items()
            ),
        )
    ]


def _ledger(d: dict[str, Any]) -> list[Row]:
    rows = []
    for backend, by_conc in d["backends"].items():
        rows.append(
            (
                "ledger",
                f"reserve+settle pairs/s, {backend}",
                "; ".join(f"{c} callers {v['pairs_per_s']:.0f}/s" for c, v in by_conc.items()),
            )
        )
    return rows


def _load(d: dict[str, Any]) -> list[Row]:
    led = d.get("ledger", {})
    return [
        (
            "HTTP server",
            f"{d['concurrency']} clients, loopback",
            f"{d['throughput_rps']:.1f} req/s, p50 {d['p50_ms']:.0f} ms, p99 {d['p99_ms']:.0f} ms, "
            f"errors {sum(d['errors'].values()) if d['errors'] else 0}, "
            f"ledger == sum of costs: {led.get('equal')}",
        )
    ] + [
        (
            "HTTP server",
            f"{d['concurrency']} clients, serve --workers {n}",
            f"{r['throughput_rps']:.1f} req/s, p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, "
            f"errors {sum(r['errors'].values()) if r['errors'] else 0}, "
            f"ledger == sum of costs: {r['ledger'].get('equal')}",
        )
        for n, r in d.get("by_workers", {}).items()
    ]


def _ppo(d: dict[str, Any]) -> list[Row]:
    out = []
    for r in d["results"]:
        label = f"{r['model']}, {r['processes']} process(es)"
        threads = r.get("omp_threads_per_process") or r.get("threads")
        if threads:
            label += f", {threads} thread(s) each"
        out.append(
            (
                "PPO update",
                label,
                f"{r['tokens_per_s']:.0f} tokens/s"
                + (f", peak RSS {r['peak_rss_mib']:.0f} MiB" if r.get("peak_rss_mib") else ""),
            )
        )
    return out


def _grpo(d: dict[str, Any]) -> list[Row]:
    out = []
    for r in d["runs"]:
        if "error" in r:
            out.append(("PPO vs TRL GRPO", f"{r['model']}, {r['algo']}", r["error"][:60]))
            continue
        out.append(
            (
                "PPO vs TRL GRPO",
                f"{r['model']}, {r['algo']}, same rollouts",
                f"{r['tokens_per_s']:.0f} tokens/s, peak RSS +{r['rss_peak_increase_mib']:.0f} MiB",
            )
        )
    return out


FORMATTERS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "overhead": _overhead,
    "controller": _controller,
    "scaling": _scaling,
    "tracing": _tracing,
    "ledger": _ledger,
    "load_server": _load,
    "ppo_throughput": _ppo,
    "grpo_vs_ppo": _grpo,
}


def table() -> str:
    lines = ["| benchmark | measure | result |", "| --- | --- | --- |"]
    loads = []
    for name, fmt in FORMATTERS.items():
        path = RESULTS / f"{name}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        for bench, measure, result in fmt(data):
            lines.append(f"| {bench} | {measure} | {result} |")
        m = data.get("machine") or {}
        if "load_avg_1m" in m:
            loads.append(f"{name} {m['load_avg_1m']:.1f}")
    if loads:
        lines.append("")
        lines.append("1-minute load average when each file was written: " + ", ".join(loads) + ".")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    text = table()
    if not args.write_readme:
        print(text)
        return
    readme = README.read_text()
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md has no {START} ... {END} block to fill")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{text}\n{END}{tail}")


if __name__ == "__main__":
    main()
