"""Experts: price sheets, cost from usage, estimates, max_tokens, replay and table errors."""

import gzip
import json
from pathlib import Path

import pytest

from corl_graph import ConfigError, DataFormatError, ExpertError
from corl_graph.experts import (
    ChatModelExpert,
    ExpertRequest,
    OutcomeTable,
    PriceSheet,
    ReplayExpert,
    extract_answer,
    input_token_bound,
    normalize_answer,
)
from corl_graph.testing import FakeChatModel

REQ = ExpertRequest("q1", "What is 2+2?", "Compute 2+2.")


def test_price_sheet_rejects_negative_and_nan() -> None:
    with pytest.raises(ConfigError, match="input_usd_per_mtok"):
        PriceSheet(-1.0, 1.0)
    with pytest.raises(ConfigError, match="output_usd_per_mtok"):
        PriceSheet(1.0, float("nan"))


def test_expert_rejects_bad_names_and_limits() -> None:
    model = FakeChatModel("4")
    with pytest.raises(ConfigError, match="expert name"):
        ChatModelExpert('bad"name', model, PriceSheet(1, 1))
    with pytest.raises(ConfigError, match="max_output_tokens"):
        ChatModelExpert("ok", model, PriceSheet(1, 1), max_output_tokens=0)
    with pytest.raises(ConfigError, match="BaseChatModel"):
        ChatModelExpert("ok", object(), PriceSheet(1, 1))  # type: ignore[arg-type]


async def test_cost_comes_from_usage_metadata() -> None:
    expert = ChatModelExpert(
        "e", FakeChatModel("It is 4", input_tokens=1000, output_tokens=500), PriceSheet(1.0, 2.0)
    )
    reply = await expert.agenerate(REQ)
    assert (reply.input_tokens, reply.output_tokens, reply.estimated) == (1000, 500, False)
    assert expert.cost_of(reply) == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)


async def test_cost_is_estimated_and_marked_when_usage_is_missing() -> None:
    expert = ChatModelExpert("e", FakeChatModel("abcdef", usage=False), PriceSheet(1.0, 1.0))
    reply = await expert.agenerate(REQ)
    assert reply.estimated is True
    assert reply.output_tokens == 2  # 6 bytes at ~3 bytes a token


def test_worst_case_uses_a_byte_bound_and_max_tokens() -> None:
    expert = ChatModelExpert(
        "e",
        FakeChatModel("x"),
        PriceSheet(1.0, 2.0),
        max_output_tokens=100,
        system_prompt="Be brief.",
    )
    tokens, usd = expert.worst_case(REQ)
    assert tokens == input_token_bound("Be brief.") + input_token_bound(REQ.subquery)
    assert usd == pytest.approx((tokens * 1.0 + 100 * 2.0) / 1e6)


def test_max_tokens_is_bound_on_the_model() -> None:
    expert = ChatModelExpert("e", FakeChatModel("x"), PriceSheet(1, 1), max_output_tokens=77)
    assert expert._model.max_tokens == 77


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("so \\boxed{42}", "42"),
        ("#### 1,234", "1234"),
        ('{"reasoning": "...", "answer": "17"}', "17"),
        ("It costs $3.50 in total", "3.5"),
        ("<answer>Paris</answer>", "paris"),
        ("B", "B"),
        ("no idea", None),
    ],
)
def test_extract_answer(text: str, answer: str | None) -> None:
    assert extract_answer(text) == answer


def test_normalize_answer_makes_equal_numbers_equal() -> None:
    assert normalize_answer("18.0") == normalize_answer("$18") == "18"


def _table(tmp_path: Path, rows: list[dict], prices: dict | None = None) -> Path:
    path = tmp_path / "t.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    (tmp_path / "t.models.json").write_text(
        json.dumps(prices or {"m": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 1.0}})
    )
    return path


ROW = dict(
    query_id="q1",
    split="test",
    task="t",
    prompt=None,
    reference="4",
    model="m",
    correct=1.0,
    answer="4",
    response=None,
    input_tokens=10,
    output_tokens=5,
    cost_usd=1.5e-5,
    cost_source="recorded",
)


async def test_replay_expert_answers_from_the_table(tmp_path: Path) -> None:
    table = OutcomeTable.load(_table(tmp_path, [ROW]))
    expert = ReplayExpert(table, "m")
    reply = await expert.agenerate(ExpertRequest("q1", "q1", "q1"))
    assert (reply.answer, reply.cost_usd, reply.input_tokens) == ("4", 1.5e-5, 10)
    # Recorded cost exceeds tokens x price here; the reservation scales to cover it.
    assert expert.worst_case(ExpertRequest("q1", "q1", "q1"))[1] >= 1.5e-5
    with pytest.raises(ExpertError, match="no recording"):
        await expert.agenerate(ExpertRequest("nope", "x", "x"))


async def test_replay_expert_truncates_at_max_tokens(tmp_path: Path) -> None:
    table = OutcomeTable.load(_table(tmp_path, [ROW]))
    reply = await ReplayExpert(table, "m", max_output_tokens=2).agenerate(
        ExpertRequest("q1", "q1", "q1")
    )
    assert reply.finish_reason == "length" and reply.answer is None and reply.output_tokens == 2


def test_table_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        OutcomeTable.load(tmp_path / "missing.jsonl.gz")
    bad = dict(ROW)
    del bad["cost_usd"]
    with pytest.raises(DataFormatError, match="missing field"):
        OutcomeTable.load(_table(tmp_path, [bad]))
    with pytest.raises(DataFormatError, match="has no price"):
        OutcomeTable.load(_table(tmp_path, [dict(ROW, model="other")]))
    with pytest.raises(DataFormatError, match="correct must be"):
        OutcomeTable.load(_table(tmp_path, [dict(ROW, correct=3)]))
    with pytest.raises(ConfigError, match="not in table"):
        ReplayExpert(OutcomeTable.load(_table(tmp_path, [ROW])), "ghost")
