"""Recording: counts against an independent computation, batch and padding invariance, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmneuron_bench.domains.tasks import sample_content
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.models.adapter import IMAGE, PAD, TEXT
from mmneuron_bench.models.loading import load_model, model_identity
from mmneuron_bench.recording import run as record_module
from mmneuron_bench.recording.run import Recording, RecordPlan, Shard, checkpoint_path
from mmneuron_bench.testing import write_tiny_task

# The Linear feeding each component's activation, per family; act(x) > 0 iff x > 0 for
# SiLU, GELU and QuickGELU, so the count of positive pre-activations is an independent check.
PRE_ACTIVATION = {
    "llava_next": {
        "vision": "model.vision_tower.encoder.layers.{i}.mlp.fc1",
        "projector": "model.multi_modal_projector.linear_1",
        "llm": "model.language_model.layers.{i}.mlp.gate_proj",
    },
    "instructblip": {
        "vision": "vision_model.encoder.layers.{i}.mlp.fc1",
        "qformer_query": "qformer.encoder.layer.{i}.intermediate_query.dense",
        "qformer_text": "qformer.encoder.layer.{i}.intermediate.dense",
        "llm": "language_model.model.layers.{i}.mlp.gate_proj",
    },
}


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tasks")
    write_tiny_task(root, "tiny_common", n_docs=5, seed=1)
    write_tiny_task(root, "tiny_medical", n_docs=4, seed=2)
    write_tiny_task(root, "tiny_extra", n_docs=3, seed=3)
    return root


def _plan(path, task_dir, **kw) -> RecordPlan:
    domains = {"common": ["tiny_common"], "medical": ["tiny_medical", "tiny_extra"]}
    return RecordPlan(str(path), domains, [str(task_dir)], **kw)


def _expected_counts(loaded, recording, scope):
    """Count positive pre-activations per domain with plain hooks on the preceding Linear."""
    adapter, model = loaded.adapter, loaded.model
    expected = {}
    for name in PRE_ACTIVATION[adapter.name]:
        info = next(c.info for c in recording.components if c.name == name)
        expected[name] = torch.zeros(
            len(recording.samples), info.layers, info.width, dtype=torch.int64
        )
    for d, samples in enumerate(recording.samples.values()):
        for sample in samples:  # one document at a time: no padding at all
            image, question = sample_content(recording.tasks, sample)
            inputs = adapter.build_inputs(loaded.processor, [image], [question])
            roles = adapter.token_roles(model, inputs)[0]
            keep_llm = {"all": roles != PAD, "image": roles == IMAGE, "text": roles == TEXT}[scope]
            handles = []
            for name, pattern in PRE_ACTIVATION[adapter.name].items():
                layers = expected[name].shape[1]
                for layer in range(layers):
                    linear = model.get_submodule(pattern.format(i=layer))

                    def hook(_m, _a, out, _name=name, _layer=layer, _d=d, _keep=keep_llm):
                        rows = out[0][_keep] if _name == "llm" else out.reshape(-1, out.shape[-1])
                        expected[_name][_d, _layer] += (rows > 0).sum(0)

                    handles.append(linear.register_forward_hook(hook))
            with torch.no_grad():
                model(**inputs)
            for handle in handles:
                handle.remove()
    return expected


@pytest.mark.parametrize("family", ["llava_next", "instructblip"])
@pytest.mark.parametrize("scope", ["all", "image", "text"])
def test_counts_match_an_independent_computation(
    tiny_checkpoint_dir, task_dir, tmp_path, family, scope
):
    path = tiny_checkpoint_dir[family]
    loaded = load_model(str(path))
    recording = Recording(loaded, _plan(path, task_dir, token_scope=scope))
    stats = recording.run(tmp_path / "x.stats.safetensors", batch_size=3)
    expected = _expected_counts(loaded, recording, scope)
    assert stats.samples == {"common": 5, "medical": 7}
    for name, counts in expected.items():
        assert torch.equal(stats.active[name], counts), name
    assert (stats.active["llm"] <= stats.tokens["llm"].unsqueeze(-1)).all()


@pytest.mark.parametrize("family", ["llava_next", "llava", "instructblip"])
def test_batch_size_and_padding_never_change_a_count(
    tiny_checkpoint_dir, task_dir, tmp_path, family
):
    path = tiny_checkpoint_dir[family]
    loaded = load_model(str(path))
    recording = Recording(loaded, _plan(path, task_dir))
    one = recording.run(tmp_path / "one.stats.safetensors", batch_size=1)
    eight = recording.run(tmp_path / "eight.stats.safetensors", batch_size=8)
    for name in one.components:
        assert torch.equal(one.active[name], eight.active[name]), name
        assert torch.equal(one.tokens[name], eight.tokens[name]), name
        torch.testing.assert_close(one.sum[name], eight.sum[name], rtol=1e-6, atol=1e-4)


def test_llm_token_counts_are_the_unpadded_positions(tiny_llava_next, task_dir, tmp_path):
    loaded = load_model(str(tiny_llava_next))
    recording = Recording(loaded, _plan(tiny_llava_next, task_dir))
    stats = recording.run(tmp_path / "x.stats.safetensors", batch_size=4)
    for d, samples in enumerate(recording.samples.values()):
        lengths = 0
        for sample in samples:
            image, question = sample_content(recording.tasks, sample)
            inputs = loaded.adapter.build_inputs(loaded.processor, [image], [question])
            lengths += inputs["input_ids"].shape[1]
        assert stats.tokens["llm"][d].tolist() == [lengths, lengths]
        # Two image slots (base + crop) of 4x4 patches plus the class token per document.
        assert stats.tokens["vision"][d].tolist() == [len(samples) * 2 * 17] * 3


def test_bfloat16_is_counted_in_int64_and_float64(tiny_llava, task_dir, tmp_path):
    loaded = load_model(str(tiny_llava))
    loaded.model.to(torch.bfloat16)
    stats = Recording(loaded, _plan(tiny_llava, task_dir)).run(tmp_path / "x.stats.safetensors", 4)
    assert all(t.dtype == torch.int64 for t in stats.active.values())
    assert all(t.dtype == torch.float64 for t in stats.sum.values())
    assert int(stats.active["llm"].sum()) > 0


class _Interrupt(Exception):
    pass


def test_resume_continues_without_counting_twice(tiny_llava_next, task_dir, tmp_path, monkeypatch):
    loaded = load_model(str(tiny_llava_next))
    plan = _plan(tiny_llava_next, task_dir)
    out = tmp_path / "x.stats.safetensors"
    full = Recording(loaded, plan).run(tmp_path / "full.stats.safetensors", batch_size=2)

    monkeypatch.setattr(record_module, "CHECKPOINT_SECONDS", 0.0)  # checkpoint every batch
    calls = {"n": 0}

    def interrupt_fourth_forward(_module, _args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise _Interrupt

    handle = loaded.model.register_forward_pre_hook(interrupt_fourth_forward)
    with pytest.raises(_Interrupt):
        Recording(loaded, plan).run(out, batch_size=2)
    handle.remove()
    [checkpoint] = tmp_path.glob("x.stats.safetensors.*.partial")
    assert not out.exists()

    resumed = Recording(loaded, plan).run(out, batch_size=3, resume=True)
    assert resumed.samples == full.samples
    for name in full.components:
        assert torch.equal(resumed.active[name], full.active[name]), name
        assert torch.equal(resumed.tokens[name], full.tokens[name]), name


def test_a_shard_without_a_checkpoint_resumes_beside_its_siblings(
    tiny_llava_next, task_dir, tmp_path
):
    loaded = load_model(str(tiny_llava_next))
    plan = _plan(tiny_llava_next, task_dir)
    out = tmp_path / "x.stats.safetensors"
    first, second = Shard(0, 2), Shard(1, 2)
    alone = Recording(loaded, plan, second).run(tmp_path / "alone.stats.safetensors")
    digest = plan.digest(model_identity(loaded, str(tiny_llava_next)))
    Recording(loaded, plan, first).empty_stats().save(checkpoint_path(out, digest, first))
    resumed = Recording(loaded, plan, second).run(out, resume=True)
    assert resumed.samples == alone.samples
    for name in alone.components:
        assert torch.equal(resumed.active[name], alone.active[name]), name
    # A checkpoint of another number of processes still stops a resume.
    other = tmp_path / "y.stats.safetensors"
    Recording(loaded, plan).empty_stats().save(checkpoint_path(other, digest, Shard(0, 3)))
    with pytest.raises(MMNeuronError, match=r"cannot resume: .*rank0-of-3.partial was recorded"):
        Recording(loaded, plan, first).run(other, resume=True)


def test_a_checkpoint_of_another_model_is_refused(tiny_llava_next, tiny_llava, task_dir, tmp_path):
    loaded = load_model(str(tiny_llava_next))
    plan = _plan(tiny_llava_next, task_dir)
    out = tmp_path / "x.stats.safetensors"
    digest = plan.digest(model_identity(loaded, str(tiny_llava_next)))
    other = load_model(str(tiny_llava))
    foreign = Recording(other, _plan(tiny_llava, task_dir)).empty_stats()
    foreign.save(checkpoint_path(out, digest, Shard()))
    with pytest.raises(MMNeuronError, match=r"cannot resume from .*: model adapter differs"):
        Recording(loaded, plan).run(out, resume=True)
    assert not out.exists()


def test_empty_domain_is_refused(tiny_llava, tmp_path):
    from mmneuron_bench.errors import MMNeuronError

    folder = write_tiny_task(tmp_path, "tiny_empty", n_docs=2)
    with open(folder / "utils.py", "a") as utils:
        utils.write("\n\ndef drop_all(dataset):\n    return dataset.select([])\n")
    with open(folder / "tiny_empty.yaml", "a") as yaml:
        yaml.write("process_docs: !function utils.drop_all\n")
    loaded = load_model(str(tiny_llava))
    plan = RecordPlan(str(tiny_llava), {"empty": ["tiny_empty"]}, [str(tmp_path)])
    # lmms-eval itself cannot build an empty task; the error says which task and why.
    with pytest.raises(MMNeuronError, match="^cannot load task 'tiny_empty': it has no documents$"):
        Recording(loaded, plan)


def test_unknown_task_is_refused(tiny_llava, task_dir):
    from mmneuron_bench.errors import MMNeuronError

    loaded = load_model(str(tiny_llava))
    plan = RecordPlan(str(tiny_llava), {"x": ["no_such_task_anywhere"]}, [str(task_dir)])
    with pytest.raises(MMNeuronError, match="task 'no_such_task_anywhere' not found"):
        Recording(loaded, plan)
