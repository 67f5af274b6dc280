"""Helpers of the data and reward tests: where the shared evaluation files are, a tiny local tokenizer."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: A chat template of the tiny tokenizer (role markers around each message, generation prompt at the end).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|eos|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def shared_eval_dir() -> Path:
    """The paper's released evaluation files: $RPG_SHARED_DATA/eval if set, else shared/data/eval next to the
    repository, else the project machines' /work/shared/data/eval."""
    if "RPG_SHARED_DATA" in os.environ:
        candidates = [Path(os.environ["RPG_SHARED_DATA"]) / "eval"]
    else:
        candidates = [REPO.parent / "shared" / "data" / "eval", Path("/work/shared/data/eval")]
    for path in candidates:
        if path.is_dir():
            return path
    pytest.fail(f"shared evaluation files not found at {[str(p) for p in candidates]}; set RPG_SHARED_DATA")


def build_byte_tokenizer(out_dir: Path) -> Path:
    """Save a byte-level tokenizer (one token per UTF-8 byte, exact decode) with a chat template to out_dir."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=byte_vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|pad|>", "<|eos|>", "<|user|>", "<|assistant|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|eos|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out_dir))
    return out_dir
