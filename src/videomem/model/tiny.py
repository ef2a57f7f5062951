"""A local tokenizer and tiny configs of the real Qwen2.5-VL / Qwen3-VL classes, for CPU tests and toy runs.

Nothing can be downloaded here, so the tiny policy brings its own tokenizer: byte-level BPE (any text
encodes) trained deterministically on a small corpus, wrapped in ``PreTrainedTokenizerFast`` with the
Qwen special tokens and a Qwen-like chat template. The configs build the *real* transformers classes
(``Qwen2_5_VLForConditionalGeneration``, ``Qwen3VLForConditionalGeneration``) at toy sizes, obeying the
rules the transformers configs need: ``mrope_section`` sums to head_dim / 2, vision ``out_hidden_size`` equals the
text hidden size, ``bos_token_id=None``, special-token ids written into the config.

This module does not build models or load checkpoints (see ``policy.py``).
"""

from __future__ import annotations

import functools
import string

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PretrainedConfig, PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen3VLConfig

ARCHS = ("qwen2_5_vl", "qwen3_vl")

# Qwen's special tokens; `<|endoftext|>` is Qwen's pad token, `<|im_end|>` its chat eos.
PAD, EOS = "<|endoftext|>", "<|im_end|>"
SPECIAL_TOKENS = [
    PAD,
    "<|im_start|>",
    EOS,
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Output tags of the memory loop: ordinary (non-special) added tokens, so each is one token and decodes.
TAG_TOKENS = ["<memory>", "</memory>", "<answer>", "</answer>"]

# Mimics Qwen2-VL's template: ChatML turns; a {"type": "video"} item is one vision placeholder that the
# policy expands to the right number of <|video_pad|> tokens. No default system turn is injected.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'video' -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'text' -%}"
    "{{- item['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

# Words of the step prompt (memory/prompt.py) and of generic video QA, used when the synthetic data
# module's corpus is not importable. The tokenizer never fails on other text (byte fallback).
_FALLBACK_CORPUS = """
You watch a long video one clip at a time and cannot see earlier clips again.
Keep a short memory of the facts that matter for the question.
Reply with the updated memory and your current answer, exactly as
<memory>...</memory><answer>X</answer> where X is an option letter.
Clip 1 of 4 (0:00-0:15). Clip 2 of 4. Clip 3 of 4. Clip 4 of 4. Question: Options: Memory: (empty)
Update the memory and answer. A. B. C. D. E.
What colour is the large shape? How many red squares appeared? Which shape moved first?
What was the first colour shown? Which object appeared last? How many times did it change?
red green blue yellow orange purple white black gray pink brown cyan magenta
circle square triangle star cross diamond ring bar dot shape object background
left right top bottom center up down moving static small large big first last before after
none one two three four five six seven eight nine ten zero count colour color number times
seen saw appeared disappeared changed stayed clip video frame seconds at the a an of in on
"""


def _corpus() -> list[str]:
    """Training text: the synthetic generator's corpus if importable, the fallback words, the alphabet."""
    lines = [line for line in _FALLBACK_CORPUS.splitlines() if line.strip()]
    try:
        from videomem.data.synthetic_text import tokenizer_corpus
    except ImportError:
        extra: list[str] = []
    else:
        extra = tokenizer_corpus()
        extra = [extra] if isinstance(extra, str) else list(extra)
    chars = string.ascii_letters + string.digits + string.punctuation
    # the step prompt's fixed words (videomem.memory.prompt), so each is one token
    prompt = "Clip of\nQuestion: Options:\nMemory: (empty)\nUpdate the memory and answer.\n"
    prompt += "You see a long video one clip at a time, never again. Keep a short memory of facts for the question. "
    prompt += "Reply with X an option letter, or your own words when the question has no options. "
    prompt += "Answer in your own words. A. B. C. D. E. 0:00-0:04\n"
    return (
        lines
        + extra
        + [prompt] * 20
        + [chars, " ".join(chars), " ".join(string.digits) + " 0.5 1.5 2.5 seconds"]
    )


@functools.lru_cache(maxsize=4)
def _tokenizer_json(vocab_size: int) -> str:
    """Train the byte-level BPE once per vocab size; returned as JSON so every caller gets a fresh copy."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in TAG_TOKENS])
    return tok.to_str()


def build_tokenizer(vocab_size: int = 768) -> PreTrainedTokenizerFast:
    """A deterministic local byte-level BPE tokenizer with Qwen's special tokens and chat template.

    Args:
        vocab_size: Target size of the trained vocabulary (special tokens included, tag tokens added
            on top); the corpus may stop short of it.

    Returns:
        A left-padding ``PreTrainedTokenizerFast`` (pad ``<|endoftext|>``, eos ``<|im_end|>``, no bos).
    """
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(vocab_size)),
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in (PAD, EOS)],
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


# Flat knobs of the tiny model; `tiny_config(overrides=...)` rejects any other key.
TINY_DEFAULTS: dict = {
    "vocab_size": 768,  # tokenizer training target; the model's vocab is len(tokenizer)
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 256,
    "vision_depth": 2,
    "vision_hidden_size": 64,
    "vision_num_heads": 4,
    "vision_intermediate_size": 128,
    "vision_patch_size": None,  # None: the arch's own (14 Qwen2.5-VL, 16 Qwen3-VL)
    "vision_merge_size": 2,  # spatial_merge_size: merge x merge patches per LLM token
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
    "max_position_embeddings": 4096,
    "initializer_range": 0.02,  # std of the normal init of every linear / embedding weight (Qwen's 0.02)
}


def mrope_section(arch: str, head_dim: int) -> list[int]:
    """Split head_dim / 2 rotary frequencies into (t, h, w) in the real models' proportions.

    Qwen2.5-VL uses [16, 24, 24] of 64 (contiguous), Qwen3-VL [24, 20, 20] of 64 (interleaved).
    """
    half = head_dim // 2
    hw = round(half * (24 if arch == "qwen2_5_vl" else 20) / 64)
    return [half - 2 * hw, hw, hw]


def tiny_config(
    arch: str, tokenizer: PreTrainedTokenizerFast, overrides: dict | None = None
) -> PretrainedConfig:
    """Config of a tiny random Qwen2.5-VL or Qwen3-VL whose special-token ids match ``tokenizer``.

    Args:
        arch: ``"qwen2_5_vl"`` (patch 14, frames multiple of 28) or ``"qwen3_vl"`` (patch 16, multiple of 32).
        tokenizer: The tokenizer the model will use (``build_tokenizer``).
        overrides: Keys of ``TINY_DEFAULTS`` to change.

    Returns:
        A ``Qwen2_5_VLConfig`` or ``Qwen3VLConfig``.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    unknown = set(overrides or {}) - set(TINY_DEFAULTS)
    if unknown:
        raise KeyError(f"unknown tiny config keys {sorted(unknown)}; allowed: {sorted(TINY_DEFAULTS)}")
    c = {**TINY_DEFAULTS, **(overrides or {})}
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = c["hidden_size"] // c["num_attention_heads"]
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": c["hidden_size"],
        "intermediate_size": c["intermediate_size"],
        "num_hidden_layers": c["num_hidden_layers"],
        "num_attention_heads": c["num_attention_heads"],
        "num_key_value_heads": c["num_key_value_heads"],
        "max_position_embeddings": c["max_position_embeddings"],
        "initializer_range": c["initializer_range"],
        "pad_token_id": ids[PAD],
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": c["rope_theta"],
            "mrope_section": mrope_section(arch, head_dim),
        },
    }
    vision = {
        "depth": c["vision_depth"],
        "hidden_size": c["vision_hidden_size"],
        "intermediate_size": c["vision_intermediate_size"],
        "num_heads": c["vision_num_heads"],
        "out_hidden_size": c["hidden_size"],
        "spatial_merge_size": c["vision_merge_size"],
        "temporal_patch_size": 2,
        "initializer_range": c["initializer_range"],
    }
    tokens = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    if arch == "qwen2_5_vl":
        text.update(bos_token_id=None, eos_token_id=ids[EOS])
        vision.update(
            patch_size=c["vision_patch_size"] or 14,
            tokens_per_second=2,
            window_size=112,
            fullatt_block_indexes=[c["vision_depth"] - 1],
        )
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens)
    else:
        text.update(head_dim=head_dim)
        text["rope_parameters"]["mrope_interleaved"] = True
        vision.update(
            patch_size=c["vision_patch_size"] or 16, num_position_embeddings=256, deepstack_visual_indexes=[0]
        )
        config = Qwen3VLConfig(text_config=text, vision_config=vision, **tokens)
    config.tie_word_embeddings = bool(c["tie_word_embeddings"])
    config.text_config.tie_word_embeddings = bool(c["tie_word_embeddings"])
    config.bos_token_id = None
    config.eos_token_id = ids[EOS]
    config.pad_token_id = ids[PAD]
    return config
