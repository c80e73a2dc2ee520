"""Tiny models for tests, the learning check and benchmarks: a BPE tokenizer trained in
seconds on the controller protocol, with a ChatML template, and a random Llama of any size.

No weights are downloaded: ``tiny_tokenizer`` trains on text it is given, ``tiny_llama``
builds a ``LlamaForCausalLM`` from a config.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from corl_graph.protocol import budget_token

__all__ = ["CHATML_TEMPLATE", "PROTOCOL_TOKENS", "tiny_llama", "tiny_tokenizer"]

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# One token per protocol tag, so a small model spends its capacity on decisions, not spelling.
PROTOCOL_TOKENS = (
    "<think>",
    "</think>",
    '<call expert="',
    '">',
    "</call>",
    "<answer>",
    "</answer>",
    "<aggregate/>",
    "<query>",
    "</query>",
    '<expert name="',
    "</expert>",
)
_SPECIAL = ("<|pad|>", "<|im_start|>", "<|im_end|>")


def tiny_tokenizer(
    corpus: Iterable[str],
    *,
    vocab_size: int = 1024,
    tiers: Sequence[str] = ("low", "medium", "high"),
    extra_tokens: Sequence[str] = (),
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``corpus`` with ChatML special tokens, one token
    per protocol tag and per budget tier, and a chat template (saved by ``save_pretrained``).

    >>> tok = tiny_tokenizer(["What is 2 + 2?"], vocab_size=300)
    >>> tok.convert_tokens_to_ids("<budget:low>") != tok.unk_token_id
    True
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_SPECIAL),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer)
    added = [*PROTOCOL_TOKENS, *(budget_token(t) for t in tiers), *extra_tokens]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        unk_token=None,
    )
    fast.add_tokens(added)
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_llama(
    vocab_size: int,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_positions: int = 2048,
    tie_embeddings: bool = True,
    pad_token_id: int | None = None,
    eos_token_id: int | None = None,
) -> LlamaForCausalLM:
    """A randomly initialised Llama; pass SmolLM2-135M's dims (576, 30, 9, 3, 1536, 49152)
    to reproduce its architecture."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tie_embeddings,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)
