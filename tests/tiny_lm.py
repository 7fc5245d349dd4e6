"""A tiny causal language model built here: a real GPT-2 architecture with random weights.

Small enough to load and generate in well under a second on a CPU, so the gateway's
in-process engine and ``grappe serve`` are tested with a real model and nothing downloaded.
"""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "the a factory model grappe runs serves jobs on sites in europe with open weights "
    "and tokens budget project key request stream answer hello world bonjour le la de "
    "compute gpu cpu data quantum user operator sovereign cloud cluster fast small"
).split()
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


def build_tiny_lm(directory: Path, seed: int = 0) -> Path:
    """Save a 2-layer GPT-2 and a word-level tokenizer (with a chat template) to ``directory``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    specials = ["<unk>", "<eos>"]
    vocab = {w: i for i, w in enumerate([*specials, ":", *WORDS, "user", "assistant", "system"])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=512,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=vocab["<eos>"],
        eos_token_id=vocab["<eos>"],
    )
    model = GPT2LMHeadModel(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
