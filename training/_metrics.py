"""Metrics sinks: one JSON line per iteration, TensorBoard when installed, a progress bar."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from corl_graph._exceptions import ConfigError

__all__ = ["MetricsWriter", "require_tensorboard"]


def require_tensorboard() -> None:
    """Raise ``ConfigError`` naming the fix when the optional tensorboard package is absent."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "tensorboard=True (--tensorboard) needs the tensorboard package: "
            "pip install tensorboard (metrics.jsonl is written either way)"
        )


class MetricsWriter:
    """Writes ``{"iteration": i, "time": t, <metric>: value, ...}`` lines (main rank only)."""

    def __init__(
        self,
        path: str | Path | None,
        *,
        tensorboard_dir: str | Path | None = None,
        progress_total: int | None = None,
        enabled: bool = True,
    ):
        self.enabled = enabled
        self.path = Path(path) if path and enabled else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tb: Any = None
        if tensorboard_dir and enabled:
            require_tensorboard()
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(tensorboard_dir))
        self._bar: Any = None
        if progress_total and enabled:
            from tqdm.auto import tqdm  # type: ignore[import-untyped]

            self._bar = tqdm(total=progress_total, desc="ppo", unit="iter")

    def write(self, iteration: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        if self.path:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(
                    json.dumps({"iteration": iteration, "time": time.time(), **metrics}) + "\n"
                )
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, v, iteration)
        if self._bar is not None:
            self._bar.update(1)
            shown = {
                k.split("/")[-1]: f"{v:.3g}"
                for k, v in metrics.items()
                if k in ("reward/mean", "losses/approx_kl", "losses/value")
            }
            self._bar.set_postfix(shown)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._bar is not None:
            self._bar.close()
