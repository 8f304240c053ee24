"""Logit lens on tiny checkpoints, against a direct full-vocabulary softmax of every layer."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from mmneuron_bench.analysis.logit_lens import LensCurves, lens_entropies, measure_logit_lens
from mmneuron_bench.cli import build_cli
from mmneuron_bench.domains.tasks import domain_samples, load_tasks, sample_content
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.models.adapter import IMAGE, TEXT
from mmneuron_bench.models.loading import load_model, model_identity
from mmneuron_bench.testing import tiny_image, write_tiny_task

QUESTION = "what color is the circle on the left of the image ?"


def direct_entropies(loaded, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropies [layers, seq] from HF's hidden states with the full softmax in float64, and
    the entropy of the model's own logits [seq]."""
    parts = loaded.adapter.language_model(loaded.model)
    with torch.no_grad():
        out = loaded.model(**inputs, output_hidden_states=True)
        # InstructBLIP nests the language model's outputs.
        hidden_states = getattr(out, "language_model_outputs", out).hidden_states
        # hidden_states[l + 1] is the output of decoder layer l; the last entry is already
        # normed, so the last layer is compared with the model's logits instead.
        layers = len(parts.layers)
        rows = []
        for layer in range(layers - 1):
            logits = parts.lm_head(parts.final_norm(hidden_states[layer + 1]))[0].double()
            rows.append(entropy(logits))
        rows.append(entropy(out.logits[0].double()))
    return torch.stack(rows), entropy(out.logits[0].double())


def entropy(logits: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(logits, -1)
    return -(p * torch.log(p)).sum(-1)


@pytest.mark.parametrize("family", ["llava_next", "instructblip"])
def test_chunked_lens_matches_a_direct_full_softmax(tiny_checkpoint_dir, family):
    loaded = load_model(str(tiny_checkpoint_dir[family]))
    inputs = loaded.adapter.build_inputs(loaded.processor, [tiny_image(3)], [QUESTION])
    seq = inputs["input_ids"].shape[1]
    chunk = 5
    assert seq > 2 * chunk and seq % chunk != 0  # several chunks and a partial last one
    lm_head = loaded.adapter.language_model(loaded.model).lm_head
    sizes = []  # positions of every full-vocabulary logits tensor the lens makes
    handle = lm_head.register_forward_hook(lambda _m, _a, out: sizes.append(out.shape[-2]))
    try:
        lens = lens_entropies(loaded, inputs, chunk_size=chunk)
    finally:
        handle.remove()
    # Never more than a chunk of positions at once (the model's own head keeps 1 position).
    layers = len(loaded.adapter.language_model(loaded.model).layers)
    assert max(sizes) == chunk and sum(sizes) == layers * seq + 1
    expected, own = direct_entropies(loaded, inputs)
    assert lens.shape == (expected.shape[0], 1, seq)
    torch.testing.assert_close(lens[:, 0], expected, rtol=0, atol=1e-5)
    # The lens at the last layer is the model's own next-token distribution.
    torch.testing.assert_close(lens[-1, 0], own, rtol=0, atol=1e-5)
    # The chunk size changes memory, and the result only by float32 rounding.
    whole = lens_entropies(loaded, inputs, chunk_size=seq)
    torch.testing.assert_close(whole, lens, rtol=0, atol=1e-5)
    assert float(lens.max()) <= torch.log(torch.tensor(72.0)).item() + 1e-6


def test_curves_average_image_and_text_positions_separately():
    entropies = torch.tensor([[[1.0, 2.0, 3.0, 4.0]], [[5.0, 6.0, 7.0, 8.0]]], dtype=torch.float64)
    roles = torch.tensor([[TEXT, IMAGE, IMAGE, 0]])  # the last position is padding
    curves = LensCurves(2)
    curves.add(entropies, roles)
    curves.add(entropies[:, :, :1], roles[:, :1])
    assert curves.counts == {"image": 2, "text": 2}
    assert curves.means() == {"image": [2.5, 6.5], "text": [1.0, 5.0]}
    assert LensCurves(2).means() == {"image": [None, None], "text": [None, None]}


@pytest.fixture(scope="module")
def task_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("lens_tasks")
    write_tiny_task(root, "vqa_medical", n_docs=2, seed=5)
    return root


@pytest.fixture(scope="module")
def llava(tiny_llava):
    return load_model(str(tiny_llava))


def llm_mask(loaded) -> NeuronMask:
    """Domain `medical`: a quarter of the LLM neurons of every layer."""
    infos = {c.name: c.info for c in loaded.adapter.resolve(loaded.model)}
    masks = {}
    for name, info in infos.items():
        m = torch.zeros(info.layers, info.width, dtype=torch.bool)
        if name == "llm":
            m[:, : info.width // 4] = True
        masks[("medical", name)] = m
    return NeuronMask(["medical"], infos, {}, "test", {}, None, masks)


def test_measured_curves_pool_every_sample(llava, task_root):
    tasks = load_tasks(["vqa_medical"], [str(task_root)])
    mask = llm_mask(llava)
    [result] = measure_logit_lens(
        llava, tasks, {"vqa_medical": "medical"}, mask, "llm", limit=2, chunk_size=8
    )
    assert result.samples == 2 and set(result.curves) == {"original", "masked"}
    # By hand: the unmasked lens of each document, pooled over positions of each kind.
    sums, counts = {"image": 0, "text": 0}, {"image": 0, "text": 0}
    for sample in domain_samples(tasks, ["vqa_medical"], None):
        image, question = sample_content(tasks, sample)
        inputs = llava.adapter.build_inputs(llava.processor, [image], [question])
        lens, _ = direct_entropies(llava, inputs)
        roles = llava.adapter.token_roles(llava.model, inputs)[0]
        for kind, role in (("image", IMAGE), ("text", TEXT)):
            sums[kind] = sums[kind] + lens[:, roles == role].sum(-1)
            counts[kind] += int((roles == role).sum())
    means = result.curves["original"].means()
    for kind in ("image", "text"):
        assert result.curves["original"].counts[kind] == counts[kind]
        assert means[kind] == pytest.approx((sums[kind] / counts[kind]).tolist(), abs=1e-5)
    assert result.curves["masked"].means() != means


def run_cli(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(build_cli(), list(args))


def test_logit_lens_command_writes_json_csv_and_png(tiny_llava, llava, task_root, tmp_path):
    mask_path = tmp_path / "m.mask.safetensors"
    replace(llm_mask(llava), model=model_identity(llava, str(tiny_llava))).save(mask_path)
    out = tmp_path / "out"
    result = run_cli(
        "analyze", "logit-lens", "--pretrained", str(tiny_llava), "--tasks", "vqa_medical",
        "--include-path", str(task_root), "--mask", str(mask_path), "--modules", "llm",
        "--limit", "1", "--chunk-size", "4", "--output", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "vqa_medical, domain medical: 1 samples" in result.stdout
    data = json.loads((out / "logit_lens.json").read_text())
    assert data["format"] == "mmneuron-logit-lens/1" and data["module_set"] == "llm"
    task = data["tasks"]["vqa_medical"]
    assert task["domain"] == "medical" and task["samples"] == 1 and task["layers"] == 2
    assert set(task["mean_entropy"]) == {"original", "masked"}
    with open(out / "logit_lens.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 2  # conditions x kinds x layers
    for row in rows:
        expected = task["mean_entropy"][row["condition"]][row["positions"]][int(row["layer"])]
        assert float(row["mean_entropy"]) == expected
        assert int(row["count"]) == task["positions"][row["positions"]]
    with Image.open(out / "logit_lens.png") as image:
        image.load()
        assert image.format == "PNG" and image.width > 100 and image.height > 100


def test_without_a_mask_only_original_curves(tiny_llava, task_root, tmp_path):
    out = tmp_path / "out"
    result = run_cli(
        "analyze", "logit-lens", "--pretrained", str(tiny_llava), "--tasks", "vqa_medical",
        "--include-path", str(task_root), "--limit", "1", "--output", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((out / "logit_lens.json").read_text())
    assert data["mask"] is None and data["module_set"] is None
    assert list(data["tasks"]["vqa_medical"]["mean_entropy"]) == ["original"]


def test_domain_without_mask_is_refused(tiny_llava, task_root, tmp_path):
    result = run_cli(
        "analyze", "logit-lens", "--pretrained", str(tiny_llava), "--tasks", "vqa_medical",
        "--include-path", str(task_root), "--domain", "vqa_medical=medical",
        "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--domain needs --mask" in result.output
    assert not (tmp_path / "out").exists()
