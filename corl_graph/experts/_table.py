"""Recorded outcomes of real LLMs, in the canonical format of the project's data tables.

One gzip JSON-lines file per dataset, one row per (query, model), with a ``<name>.models.json``
price file beside it. Fields: query_id, task, split, prompt, reference, model, correct, answer,
response, input_tokens, output_tokens, cost_usd, cost_source. ``prompt`` and ``response`` may be
null (the tables bundled with corl_graph hold numbers only). A row with neither ``answer`` nor
``response`` is judged by its recorded ``correct`` (there is nothing to compare); recorded
output tokens of 0 are allowed (some tables record scores and costs only).

``OutcomeTable.restrict`` derives a table (a pool of models, a set of queries, text dropped)
and ``OutcomeTable.save`` writes it in the same format, so a derived pool is a table like any.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from corl_graph._exceptions import ConfigError, DataFormatError
from corl_graph.experts._expert import PriceSheet

__all__ = ["Outcome", "OutcomeTable", "QueryInfo"]

_REQUIRED = ("query_id", "split", "model", "correct", "input_tokens", "output_tokens", "cost_usd")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one model did on one query."""

    correct: float
    answer: str | None
    response: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float

    @property
    def has_text(self) -> bool:
        """Whether the row records a reply (an answer or a response) to judge."""
        return bool(self.answer or self.response)


@dataclass(frozen=True, slots=True)
class QueryInfo:
    """A query of the table: its id, split, task, text (when shipped) and gold answer."""

    query_id: str
    split: Literal["train", "test"]
    task: str
    prompt: str | None
    reference: str | None


class OutcomeTable:
    """Every (query, model) outcome of a dataset, with the models' prices.

    >>> t = OutcomeTable.from_rows(
    ...     [dict(query_id="q1", split="test", model="m", correct=1.0, answer="4",
    ...           input_tokens=10, output_tokens=2, cost_usd=1e-6)],
    ...     prices={"m": PriceSheet(0.1, 0.1)})
    >>> t.outcome("q1", "m").answer
    '4'
    """

    def __init__(
        self,
        queries: Mapping[str, QueryInfo],
        outcomes: Mapping[tuple[str, str], Outcome],
        prices: Mapping[str, PriceSheet],
        *,
        name: str = "table",
    ):
        self.name = name
        self.queries = dict(queries)
        self.prices = dict(prices)
        self._outcomes = dict(outcomes)
        self.models = sorted(prices)
        missing = [(q, m) for q in self.queries for m in self.models if (q, m) not in outcomes]
        if missing:
            q, m = missing[0]
            raise DataFormatError(
                f"table {name!r}: {len(missing)} (query, model) pairs have no row, e.g. "
                f"({q!r}, {m!r}); every query needs every model"
            )

    @classmethod
    def load(cls, path: str | Path) -> OutcomeTable:
        """Read ``NAME.jsonl.gz`` (or ``.jsonl``) and ``NAME.models.json`` beside it."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"outcome table {str(path)!r} does not exist")
        stem = path.name.removesuffix(".gz").removesuffix(".jsonl")
        prices_path = path.with_name(f"{stem}.models.json")
        if not prices_path.is_file():
            raise DataFormatError(f"price file {str(prices_path)!r} missing beside {path.name}")
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt", encoding="utf-8") as fh:
                rows = [json.loads(line) for line in fh if line.strip()]
            raw_prices = json.loads(prices_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataFormatError(f"cannot read outcome table {str(path)!r}: {exc}") from exc
        prices = {
            model: PriceSheet(float(p["input_usd_per_mtok"]), float(p["output_usd_per_mtok"]))
            for model, p in raw_prices.items()
        }
        return cls.from_rows(rows, prices=prices, name=stem)

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[Mapping[str, Any]],
        *,
        prices: Mapping[str, PriceSheet],
        name: str = "table",
    ) -> OutcomeTable:
        queries: dict[str, QueryInfo] = {}
        outcomes: dict[tuple[str, str], Outcome] = {}
        for i, row in enumerate(rows):
            lacking = [f for f in _REQUIRED if f not in row]
            if lacking:
                raise DataFormatError(f"table {name!r} row {i}: missing field(s) {lacking}")
            if row["model"] not in prices:
                raise DataFormatError(
                    f"table {name!r} row {i}: model {row['model']!r} has no price"
                )
            qid = str(row["query_id"])
            if row["split"] not in ("train", "test"):
                raise DataFormatError(f"table {name!r} row {i}: split must be train or test")
            queries.setdefault(
                qid,
                QueryInfo(
                    qid,
                    row["split"],
                    str(row.get("task", name)),
                    row.get("prompt"),
                    row.get("reference"),
                ),
            )
            outcomes[(qid, str(row["model"]))] = _outcome(row, name, i)
        return cls(queries, outcomes, prices, name=name)

    def outcome(self, query_id: str, model: str) -> Outcome:
        try:
            return self._outcomes[(query_id, model)]
        except KeyError:
            raise DataFormatError(
                f"table {self.name!r} has no outcome for query {query_id!r} on model {model!r}"
            ) from None

    def split(self, split: Literal["train", "test"]) -> list[QueryInfo]:
        return [q for q in self.queries.values() if q.split == split]

    def max_output_tokens(self, model: str) -> int:
        """The longest recorded reply of ``model``, at least 1 (tables that record no output
        tokens still give a positive reply limit; their reservation then rests on the
        recorded costs, see ``ReplayExpert``)."""
        return (
            max((o.output_tokens for (_, m), o in self._outcomes.items() if m == model), default=1)
            or 1
        )

    def max_cost(self, model: str) -> float:
        """The priciest recorded call of ``model``."""
        return max((o.cost_usd for (_, m), o in self._outcomes.items() if m == model), default=0.0)

    def restrict(
        self,
        models: Sequence[str] | None = None,
        *,
        query_ids: Iterable[str] | None = None,
        drop_text: bool = False,
        zero_tokens: bool = False,
        name: str | None = None,
    ) -> OutcomeTable:
        """A derived table: only ``models`` (a pool) and ``query_ids``; ``drop_text`` removes
        prompts, answers and responses, ``zero_tokens`` the token counts (costs are kept), as
        in tables that record scores and costs only.

        >>> t = OutcomeTable.from_rows(
        ...     [dict(query_id="q1", split="test", model=m, correct=1.0, answer="4",
        ...           input_tokens=10, output_tokens=2, cost_usd=1e-6) for m in "ab"],
        ...     prices={"a": PriceSheet(0.1, 0.1), "b": PriceSheet(1, 1)})
        >>> t.restrict(["b"], drop_text=True).outcome("q1", "b").has_text
        False
        """
        chosen = list(models) if models is not None else self.models
        unknown = [m for m in chosen if m not in self.prices]
        if unknown or not chosen:
            raise ConfigError(
                f"table {self.name!r}: unknown model(s) {unknown} in the pool; "
                f"models: {', '.join(self.models)}"
            )
        ids = list(query_ids) if query_ids is not None else list(self.queries)
        lacking = [q for q in ids if q not in self.queries]
        if lacking:
            raise ConfigError(f"table {self.name!r} has no query {lacking[0]!r}")
        queries = {}
        for q in ids:
            info = self.queries[q]
            queries[q] = (
                QueryInfo(q, info.split, info.task, None, info.reference) if drop_text else info
            )
        outcomes = {}
        for q in ids:
            for m in chosen:
                o = self._outcomes[(q, m)]
                if drop_text:
                    o = Outcome(o.correct, None, None, o.input_tokens, o.output_tokens, o.cost_usd)
                if zero_tokens:
                    o = Outcome(o.correct, o.answer, o.response, 0, 0, o.cost_usd)
                outcomes[(q, m)] = o
        prices = {m: self.prices[m] for m in chosen}
        return OutcomeTable(queries, outcomes, prices, name=name or self.name)

    def save(self, path: str | Path) -> Path:
        """Write ``NAME.jsonl.gz`` (``path``) and ``NAME.models.json`` beside it; returns
        ``path``. ``load`` reads it back unchanged."""
        path = Path(path)
        if not path.name.endswith((".jsonl.gz", ".jsonl")):
            raise ConfigError(f"an outcome table is saved as NAME.jsonl.gz, got {path.name!r}")
        stem = path.name.removesuffix(".gz").removesuffix(".jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "wt", encoding="utf-8") as fh:
            for q, info in self.queries.items():
                for m in self.models:
                    o = self._outcomes[(q, m)]
                    row = dict(
                        query_id=q, task=info.task, split=info.split, prompt=info.prompt,
                        reference=info.reference, model=m, correct=o.correct, answer=o.answer,
                        response=o.response, input_tokens=o.input_tokens,
                        output_tokens=o.output_tokens, cost_usd=o.cost_usd,
                    )  # fmt: skip
                    fh.write(json.dumps(row) + "\n")
        prices = {
            m: {
                "input_usd_per_mtok": p.input_usd_per_mtok,
                "output_usd_per_mtok": p.output_usd_per_mtok,
            }
            for m, p in self.prices.items()
        }
        path.with_name(f"{stem}.models.json").write_text(json.dumps(prices, indent=1) + "\n")
        return path

    def mean(self, model: str, field: str, queries: Sequence[QueryInfo]) -> float:
        values = [float(getattr(self.outcome(q.query_id, model), field)) for q in queries]
        return sum(values) / len(values) if values else math.nan


def _outcome(row: Mapping[str, Any], name: str, i: int) -> Outcome:
    try:
        correct = float(row["correct"])
        cost = float(row["cost_usd"])
        in_tok, out_tok = int(row["input_tokens"]), int(row["output_tokens"])
    except (TypeError, ValueError) as exc:
        raise DataFormatError(f"table {name!r} row {i}: {exc}") from exc
    if not (0.0 <= correct <= 1.0) or cost < 0 or in_tok < 0 or out_tok < 0:
        raise DataFormatError(
            f"table {name!r} row {i}: correct must be in [0, 1], tokens and cost >= 0"
        )
    answer = row.get("answer")
    return Outcome(
        correct, None if answer is None else str(answer), row.get("response"), in_tok, out_tok, cost
    )
