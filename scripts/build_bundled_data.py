"""Build the numbers-only replay table that ships in corl_graph/data/.

Reads the recorded GSM8K outcomes of ../shared/data/outcomes/zeroeval_gsm8k, keeps a pool of
five models from cheap to strong, and drops every piece of third-party text (prompts,
responses): what remains are ids, split labels, numeric reference answers, the models'
extracted numeric answers, correctness, token counts and costs.

    python scripts/build_bundled_data.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from pathlib import Path

MODELS = (
    "gemma-2-2b-it",
    "Meta-Llama-3.1-8B-Instruct",
    "gpt-4o-mini-2024-07-18",
    "gpt-4o-2024-08-06",
    "o1-mini-2024-09-12",
)
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
OUT = Path(__file__).resolve().parent.parent / "corl_graph" / "data"


def _numeric(value: object) -> str | None:
    """Keep an answer only if it is a plain number (so no text can slip through)."""
    if value is None:
        return None
    text = str(value).strip()
    return text if _NUMBER.match(text) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    args = parser.parse_args()
    source = Path(args.shared) / "data" / "outcomes"
    prices = json.loads((source / "zeroeval_gsm8k.models.json").read_text())
    rows = []
    with gzip.open(source / "zeroeval_gsm8k.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            if r["model"] not in MODELS:
                continue
            rows.append(
                {
                    "query_id": r["query_id"],
                    "task": "gsm8k",
                    "split": r["split"],
                    "prompt": None,
                    "reference": _numeric(r["reference"]),
                    "model": r["model"],
                    "correct": float(r["correct"]),
                    "answer": _numeric(r["answer"]),
                    "response": None,
                    "input_tokens": int(r["input_tokens"]),
                    "output_tokens": int(r["output_tokens"]),
                    "cost_usd": float(r["cost_usd"]),
                    "cost_source": r["cost_source"],
                }
            )
    rows.sort(key=lambda r: (r["query_id"], r["model"]))
    OUT.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the gzip bytes identical across rebuilds.
    with (
        open(OUT / "gsm8k_replay.jsonl.gz", "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
    ):
        for r in rows:
            gz.write((json.dumps(r, sort_keys=True) + "\n").encode())
    kept = {
        m: {
            "input_usd_per_mtok": prices[m]["input_usd_per_mtok"],
            "output_usd_per_mtok": prices[m]["output_usd_per_mtok"],
        }
        for m in MODELS
    }
    (OUT / "gsm8k_replay.models.json").write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(rows)} rows for {len(MODELS)} models to {OUT}")


if __name__ == "__main__":
    main()
