"""The tiny local tokenizer: round trips, compact tags, Qwen special tokens, chat template, config ids."""

from __future__ import annotations

import sys

import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from videomem.model.tiny import (
    SPECIAL_TOKENS,
    TAG_TOKENS,
    _tokenizer_json,
    build_tokenizer,
    mrope_section,
    tiny_config,
)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.mark.parametrize(
    "text",
    [
        "<memory>2 red circles, then a blue square (0:15)</memory><answer>C</answer>",
        "Ünïcödé 你好 — emoji 🎬 tabs\tand\nnewlines  double  spaces",
        "zzqx unseen-words_42 ~!@#$%^&*()",
    ],
)
def test_any_text_round_trips(tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text


def test_tags_are_single_tokens_and_text_is_compact(tok):
    for tag in TAG_TOKENS:
        assert len(tok(tag, add_special_tokens=False)["input_ids"]) == 1
    target = "<memory>red circle</memory><answer>B</answer>"
    assert len(tok(target, add_special_tokens=False)["input_ids"]) <= 10  # 4 tags + a few word tokens


def test_special_tokens_and_padding(tok):
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert len(set(ids)) == len(SPECIAL_TOKENS) and tok.unk_token_id not in ids
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>" and tok.bos_token is None
    assert tok.padding_side == "left"
    assert tok("<|video_pad|><|video_pad|>", add_special_tokens=False)["input_ids"] == [ids[6], ids[6]]
    assert 512 <= len(tok) <= 1024


def test_training_is_deterministic():
    train = _tokenizer_json.__wrapped__  # bypass the cache: really train twice
    assert train(768) == train(768)
    assert train(600) != train(768)


def test_fallback_corpus_without_synthetic_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "videomem.data.synthetic", None)  # import now raises ImportError
    tok = Tokenizer.from_str(_tokenizer_json.__wrapped__(768))
    text = "<memory>a red circle</memory>"
    assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text


def test_chat_template_list_and_string_content(tok):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Question: what?"}]},
        {"role": "assistant", "content": "<answer>A</answer>"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Question: what?<|im_end|>\n"
        "<|im_start|>assistant\n<answer>A</answer><|im_end|>\n"
    )
    prompt = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("Question: what?<|im_end|>\n<|im_start|>assistant\n")


def test_save_load_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert loaded.get_vocab() == tok.get_vocab()
    assert loaded.chat_template == tok.chat_template
    text = "<memory>x</memory> 你好"
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_tiny_config_rules(tok, arch):
    config = tiny_config(arch, tok)
    text, vision = config.text_config, config.vision_config
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    assert vision.out_hidden_size == text.hidden_size
    assert text.vocab_size == len(tok)
    assert config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert config.bos_token_id is None and config.tie_word_embeddings is False
    assert vision.patch_size * vision.spatial_merge_size == (28 if arch == "qwen2_5_vl" else 32)


def test_tiny_config_overrides_and_unknown_keys(tok):
    config = tiny_config("qwen3_vl", tok, {"hidden_size": 256, "num_attention_heads": 8})
    assert config.text_config.hidden_size == 256 and config.vision_config.out_hidden_size == 256
    with pytest.raises(KeyError):
        tiny_config("qwen3_vl", tok, {"hiden_size": 64})
    # patch and merge sizes of the vision tower (finer patches, more of them per LLM token)
    config = tiny_config("qwen2_5_vl", tok, {"vision_patch_size": 7, "vision_merge_size": 4})
    assert config.vision_config.patch_size == 7 and config.vision_config.spatial_merge_size == 4
    assert mrope_section("qwen2_5_vl", 128) == [16, 24, 24]
    assert mrope_section("qwen3_vl", 128) == [24, 20, 20]
