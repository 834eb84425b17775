"""The talker's text tokenizer, from the checkpoint's own files, with `tokenizers` alone.

Why: qwen-tts tokenizes through transformers' ``Qwen2TokenizerFast`` (its processor), and
importing transformers costs seconds of a cold start (issue 19). The backend tokenizer
underneath is a `tokenizers` object; this builds the same one transformers 4.57.3 builds
from the same files, without importing transformers:

* ``tokenizer.json`` when present (transformers prefers it), else ``vocab.json`` +
  ``merges.txt`` converted as transformers' ``Qwen2Converter`` does (NFC, the Qwen2 split
  regex, byte-level BPE); then the added tokens of ``tokenizer_config.json`` at their ids;
* transformers' "Mistral regex" patch, which qwen-tts asks for (``fix_mistral_regex=True``)
  and which fires for a checkpoint whose ``config.json`` says 4.57.2 < transformers < 5,
  as the Qwen3-TTS repos and the tiny test checkpoints do: the first pre-tokenizer becomes
  the Mistral split (ids differ from the plain Qwen2 split on e.g. ``don't``, ``CamelCase``);
* the chat wrapping of qwen-tts's ``Qwen3TTSModel`` (``_build_assistant_text`` etc.).

Thread-safe: after construction only ``Tokenizer.encode`` is called (a shared borrow in the
Rust core), never a method that reconfigures the tokenizer (truncation, padding, added
tokens), which needs an exclusive one and fails as "Already borrowed" under concurrency.
Imports neither torch nor numpy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from ..errors import TTSError

# transformers' Qwen2Converter split and its Mistral replacement (transformers 4.57.3,
# tokenization_utils_base._patch_mistral_regex), verbatim.
QWEN2_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
               r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
MISTRAL_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                 r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                 r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_MISTRAL_TYPES = ("mistral", "mistral3", "voxtral", "ministral", "pixtral")
# Qwen2TokenizerFast's defaults for special tokens tokenizer_config.json does not name.
_SPECIAL_DEFAULTS = {"bos_token": None, "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                     "pad_token": "<|endoftext|>"}


def assistant_text(text: str) -> str:
    """The text to speak, as qwen-tts wraps it (``_build_assistant_text``)."""
    return f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n"


def ref_text(text: str) -> str:
    """A clone's reference transcript (``_build_ref_text``)."""
    return f"<|im_start|>assistant\n{text}<|im_end|>\n"


def instruct_text(instruct: str) -> str:
    """A voice instruction (``_build_instruct_text``)."""
    return f"<|im_start|>user\n{instruct}<|im_end|>\n"


class TextTokenizer:
    """Text -> token ids, as qwen-tts's processor gives them (see the module docstring)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer

    @classmethod
    def load(cls, model_dir: str | Path) -> "TextTokenizer":
        d = Path(model_dir)
        try:
            return cls(_backend(d))
        except TTSError:
            raise
        except Exception as e:  # unreadable or inconsistent files
            raise TTSError("model_load_failed", f"text tokenizer of {d}: {type(e).__name__}: {e}") from e

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` exactly as given (special tokens in it are recognised)."""
        return self._tok.encode(text, add_special_tokens=True).ids

    def assistant_ids(self, text: str) -> list[int]:
        return self.encode(assistant_text(text))

    def ref_ids(self, text: str) -> list[int]:
        return self.encode(ref_text(text))

    def instruct_ids(self, instruct: str) -> list[int]:
        return self.encode(instruct_text(instruct))

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _backend(d: Path) -> Tokenizer:
    tok_config = _read_json(d / "tokenizer_config.json")
    if (d / "tokenizer.json").is_file():
        tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    elif (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
        tok = _from_vocab_and_merges(d)
    else:
        raise TTSError("model_load_failed", f"no text tokenizer in {d} (tokenizer.json or vocab.json + merges.txt)")
    tok.no_truncation()
    tok.encode_special_tokens = bool(tok_config.get("split_special_tokens", False))
    _add_config_tokens(tok, tok_config)
    if tok.get_vocab_size(with_added_tokens=False) > 100_000 and _mistral_patch_applies(d / "config.json"):
        pre = tok.pre_tokenizer
        if pre is not None:  # transformers indexes the Sequence Qwen tokenizers have
            pre[0] = pre_tokenizers.Split(pattern=Regex(MISTRAL_SPLIT), behavior="isolated")
    return tok


def _from_vocab_and_merges(d: Path) -> Tokenizer:
    """transformers' slow Qwen2Tokenizer file reading + Qwen2Converter."""
    vocab = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
    merges: dict[tuple[str, ...], None] = {}  # ordered, first occurrence wins (a dict of ranks there)
    for i, line in enumerate((d / "merges.txt").read_text(encoding="utf-8").splitlines()):
        line = line.strip()
        if (i == 0 and line.startswith("#version:")) or not line:
            continue
        merges.setdefault(tuple(line.split()), None)
    pairs = [(m[0], m[1]) for m in merges]
    tok = Tokenizer(BPE(vocab=vocab, merges=pairs, dropout=None, unk_token=None, continuing_subword_prefix="",
                        end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _add_config_tokens(tok: Tokenizer, config: dict[str, Any]) -> None:
    """The added tokens tokenizer_config.json declares (in id order, at those ids), then its
    special tokens, where the backend lacks them (as transformers' fast tokenizer does)."""
    declared = config.get("added_tokens_decoder") or {}
    for key in sorted(declared, key=int):
        spec = declared[key]
        content = spec["content"]
        if tok.token_to_id(content) is None:
            tok.add_tokens([AddedToken(content, single_word=spec.get("single_word", False),
                                       lstrip=spec.get("lstrip", False), rstrip=spec.get("rstrip", False),
                                       normalized=spec.get("normalized", True), special=spec.get("special", False))])
        if tok.token_to_id(content) != int(key):
            raise TTSError("model_load_failed", f"added token {content!r} would get id {tok.token_to_id(content)}, "
                                                f"tokenizer_config.json says {key}")
    for name, default in _SPECIAL_DEFAULTS.items():
        value = config.get(name, default)
        content = value.get("content") if isinstance(value, dict) else value
        if isinstance(content, str) and tok.token_to_id(content) is None:
            tok.add_special_tokens([AddedToken(content, lstrip=False, rstrip=False, normalized=False, special=True)])


def _version(text: str) -> tuple[int, ...]:
    """A version string as a comparable tuple: its numbers, then 0 for a pre-release
    (dev/a/b/rc), 1 for a release, 2 for a post-release (as packaging orders them)."""
    nums = [int(n) for n in re.findall(r"\d+", re.match(r"[\d.]*", text).group(0))]  # type: ignore[union-attr]
    while len(nums) < 3:
        nums.append(0)
    rest = text[len(re.match(r"[\d.]*", text).group(0)):].lower()  # type: ignore[union-attr]
    stage = 2 if "post" in rest else (0 if rest else 1)
    return (*nums[:3], stage)


def _mistral_patch_applies(config_json: Path) -> bool:
    """Whether transformers 4.57.3 swaps in the Mistral split for a local checkpoint loaded
    with ``fix_mistral_regex=True`` (what qwen-tts does)."""
    if not config_json.is_file():
        return False
    config = _read_json(config_json)
    version, model_type = config.get("transformers_version"), config.get("model_type")
    if version:
        v = _version(str(version))
        if v <= (4, 57, 2, 1):
            return model_type is None or model_type in _MISTRAL_TYPES
        if v >= (5, 0, 0, 1):
            return False
    return True


__all__ = ["TextTokenizer", "assistant_text", "instruct_text", "ref_text"]
