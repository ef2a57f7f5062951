"""Policy.build_inputs: left padding, video placeholder expansion, mm_token_type_ids, label mask."""

from __future__ import annotations

import pytest
import torch

from videomem.model.policy import build_policy


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def policy(request):
    return build_policy(request.param)


def msgs(text: str) -> list[dict]:
    return [
        {"role": "system", "content": "Sys."},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]},
    ]


def frames(policy, num_frames: int, h: int, w: int) -> torch.Tensor:
    m = policy.patch_multiple
    return torch.randint(
        0, 256, (num_frames, h * m, w * m, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


def test_left_padding_and_video_tokens(policy):
    videos = [frames(policy, 4, 1, 1), frames(policy, 2, 2, 1)]
    inputs = policy.build_inputs([msgs("a much longer question text here"), msgs("Q")], videos)
    B, L = inputs.input_ids.shape
    assert B == 2 and inputs.attention_mask[0].all()
    n_pad = int((inputs.attention_mask[1] == 0).sum())
    assert n_pad > 0 and not inputs.attention_mask[1, :n_pad].any() and inputs.attention_mask[1, n_pad:].all()
    assert (inputs.input_ids[1, :n_pad] == policy.tokenizer.pad_token_id).all()
    # grids: 4 frames of 1x1 merge blocks -> (2, 2, 2); 2 frames of 2x1 blocks -> (1, 4, 2)
    assert inputs.video_grid_thw.tolist() == [[2, 2, 2], [1, 4, 2]]
    assert inputs.pixel_values_videos.shape[0] == 8 + 8
    video = inputs.input_ids == policy.video_token_id
    assert video.sum(-1).tolist() == [2, 2]  # t*h*w / merge^2
    assert torch.equal(inputs.mm_token_type_ids, 2 * video.long())
    assert torch.allclose(
        inputs.second_per_grid_ts, torch.tensor([1.0, 1.0])
    )  # temporal patch 2 / default 2 fps


def test_qwen3_placeholder_has_per_frame_timestamps():
    policy = build_policy("qwen3_vl")
    inputs = policy.build_inputs([msgs("Q")], [frames(policy, 4, 1, 1)], video_fps=2.0)
    text = policy.tokenizer.decode(inputs.input_ids[0])
    # frames 0,1 -> mean 0.25 s; frames 2,3 -> 1.25 s (official "{:.1f}" format)
    expected = (
        "<|vision_start|><0.2 seconds><|vision_start|><|video_pad|><|vision_end|>"
        "<1.2 seconds><|vision_start|><|video_pad|><|vision_end|><|vision_end|>Q<|im_end|>"
    )
    assert expected in text


def test_qwen2_5_placeholder_is_contiguous_pads():
    policy = build_policy("qwen2_5_vl")
    inputs = policy.build_inputs([msgs("Q")], [frames(policy, 4, 2, 2)], video_fps=4.0)
    text = policy.tokenizer.decode(inputs.input_ids[0])
    assert "<|vision_start|>" + "<|video_pad|>" * 8 + "<|vision_end|>Q" in text
    assert inputs.second_per_grid_ts.tolist() == [0.5]


def test_label_mask_covers_completion_and_im_end_only(policy):
    completions = ["<memory>red circle</memory><answer>B</answer>", "<answer>A</answer>"]
    videos = [frames(policy, 2, 1, 1), frames(policy, 2, 1, 1)]
    prompts = policy.build_inputs([msgs("long question text"), msgs("Q")], videos)
    inputs = policy.build_inputs([msgs("long question text"), msgs("Q")], videos, completions)
    im_end = policy.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for row, completion in enumerate(completions):
        labelled = inputs.labels[row] != -100
        n = int(labelled.sum())
        expected = policy.tokenizer(completion, add_special_tokens=False)["input_ids"] + [im_end]
        assert n == len(expected)
        assert labelled[-n:].all() and not labelled[:-n].any()  # a suffix: nothing in prompt or padding
        assert inputs.labels[row, -n:].tolist() == expected == inputs.input_ids[row, -n:].tolist()
        # the prompt part is exactly the generation prompt
        m = int(prompts.attention_mask[row].sum())
        real = inputs.input_ids[row][inputs.attention_mask[row].bool()]
        assert real[:m].tolist() == prompts.input_ids[row, -m:].tolist()
    assert prompts.labels is None


def test_completion_token_ids_are_used_verbatim(policy):
    ids = policy.tokenizer("<answer>C</answer>", add_special_tokens=False)["input_ids"]
    video = [frames(policy, 2, 1, 1)]
    a = policy.build_inputs([msgs("Q")], video, ["<answer>C</answer>"])
    b = policy.build_inputs([msgs("Q")], video, [ids])
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)


def test_errors(policy):
    video = frames(policy, 2, 1, 1)
    two = [{"role": "user", "content": [{"type": "video"}, {"type": "video"}]}]
    with pytest.raises(ValueError, match="exactly one video"):
        policy.build_inputs([two], [video])
    with pytest.raises(ValueError, match="one entry per row"):
        policy.build_inputs([msgs("Q"), msgs("Q")], [video])
    with pytest.raises(ValueError, match="multiple"):
        policy.build_inputs([msgs("Q")], [video[:, :-2]])


def test_to_and_model_kwargs(policy):
    inputs = policy.build_inputs([msgs("Q")], [frames(policy, 2, 1, 1)], ["x"])
    moved = inputs.to("cpu")
    assert torch.equal(moved.labels, inputs.labels)
    assert set(inputs.model_kwargs()) == {
        "input_ids",
        "attention_mask",
        "mm_token_type_ids",
        "pixel_values_videos",
        "video_grid_thw",
        "second_per_grid_ts",
    }
