"""Mistral 3 / Pixtral: the processor without torchvision, image tokens, one BOS, the tower's
concatenated patches, and its lmms-eval model's sampling default and swallowed errors."""

from __future__ import annotations

import pytest
import torch
import transformers

from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.lmms.workarounds import base_kwargs, import_base
from mmneuron_bench.models.adapter import IMAGE, PAD, TEXT
from mmneuron_bench.models.compat import torchvision_missing, video_stand_in
from mmneuron_bench.models.hooks import forward_hooks
from mmneuron_bench.models.loading import load_model
from mmneuron_bench.testing import tiny_image, write_tiny_task
from mmneuron_bench.testing.families.mistral3 import MERGE, PATCH

# (width, height): 4 x 4 patches (2 x 2 merged), 6 x 2 (3 x 1), 4 x 6 (2 x 3, sizes rounded up)
SIZES = ((32, 32), (48, 16), (24, 40))
MERGED = [(2, 2), (3, 1), (2, 3)]  # merged patches (columns, rows) of each image


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint_dir):
    return load_model(str(tiny_checkpoint_dir["mistral3"]))


def _inputs(loaded):
    images = [tiny_image(i, size) for i, size in enumerate(SIZES)]
    questions = ["what color is the circle ?", "is the triangle blue ?", "how many ?"]
    return loaded.adapter.build_inputs(loaded.processor, images, questions)


def test_processor_loads_without_torchvision(tiny_checkpoint_dir):
    with video_stand_in():
        processor = transformers.AutoProcessor.from_pretrained(tiny_checkpoint_dir["mistral3"])
    assert type(processor).__name__ == "PixtralProcessor"
    if torchvision_missing():
        assert type(processor.image_processor).__name__ == "PixtralImageProcessorPil"


def test_img_positions_are_the_image_tokens_break_and_end_are_text(loaded):
    inputs = _inputs(loaded)
    roles = loaded.adapter.token_roles(loaded.model, inputs)
    tokenizer = loaded.processor.tokenizer
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("[IMG]", "[IMG_BREAK]", "[IMG_END]")}
    for b, (cols, rows) in enumerate(MERGED):
        row = inputs["input_ids"][b]
        assert int((roles[b] == IMAGE).sum()) == cols * rows
        assert torch.equal(roles[b] == IMAGE, row == ids["[IMG]"])
        assert int((row == ids["[IMG_BREAK]"]).sum()) == rows - 1
        assert int((row == ids["[IMG_END]"]).sum()) == 1
        breaks = (row == ids["[IMG_BREAK]"]) | (row == ids["[IMG_END]"])
        assert (roles[b][breaks] == TEXT).all()
    assert torch.equal(roles == PAD, inputs["attention_mask"] == 0)


def test_prompts_have_one_bos(loaded):
    inputs = _inputs(loaded)
    bos = loaded.processor.tokenizer.bos_token_id
    for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True):
        real = ids[mask.bool()]
        assert int(real[0]) == bos and int((real == bos).sum()) == 1


def test_vision_rows_are_every_images_own_patches_in_one_sequence(loaded):
    inputs = _inputs(loaded)
    vision, projector, _ = loaded.adapter.resolve(loaded.model)
    shapes = {}

    def keep(name):
        def hook(_module, _args, out):
            shapes[name] = tuple(out.shape)

        return hook

    with forward_hooks([(vision.modules[0], keep("vision")), (projector.modules[0], keep("p"))]):
        with torch.inference_mode():
            loaded.model(**loaded.adapter.forward_kwargs(inputs))
    merged = sum(c * r for c, r in MERGED)
    assert shapes["vision"] == (1, merged * MERGE * MERGE, vision.info.width)
    assert shapes["p"] == (merged, projector.info.width)  # 2-D: no batch axis
    assert PATCH * MERGE == 16


def test_mistral3_vl_is_greedy_unless_asked(tiny_checkpoint_dir):
    cls = import_base("mistral3_vl")
    args = {"pretrained": str(tiny_checkpoint_dir["mistral3"]), "device": "cpu"}
    assert base_kwargs(cls, args)["temperature"] == 0
    assert base_kwargs(cls, {**args, "temperature": 0.7})["temperature"] == 0.7
    assert "temperature" not in base_kwargs(import_base("llava_hf"), args)


def test_a_failed_generate_is_raised_not_scored_as_an_empty_answer(tiny_checkpoint_dir, tmp_path):
    from mmneuron_bench.domains.tasks import task_manager
    from mmneuron_bench.lmms.evaluate import evaluate
    from mmneuron_bench.lmms.model import MMNeuronLMM

    write_tiny_task(tmp_path / "tasks", "mistral3_fail", n_docs=1)
    lm = MMNeuronLMM(pretrained=str(tiny_checkpoint_dir["mistral3"]), device="cpu")
    assert lm.base.temperature == 0

    def broken(*_args, **_kwargs):
        raise RuntimeError("out of memory")

    lm.model.generate = broken  # the wrapper's own patch of generate removes it afterwards
    manager = task_manager(["mistral3_fail"], [str(tmp_path / "tasks")], lm.base_name)
    with pytest.raises(MMNeuronError, match="generation failed: RuntimeError: out of memory"):
        evaluate(lm, ["mistral3_fail"], manager)
