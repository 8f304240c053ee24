"""FastMem as an intervention kind, on the tiny checkpoints: what it trains, that a cached step
equals a full one, that weights come back bit-identical, that steps=0 and CD with a=0 change
nothing, that it composes with a mask, memorises once per document, and runs from run, the
grid, the mmneuron model's arguments and bench."""

from __future__ import annotations

import json
import textwrap
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from mmneuron_bench.cli import build_cli
from mmneuron_bench.domains.tasks import task_manager
from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.interventions.base import Target
from mmneuron_bench.interventions.fastmem import (
    FastMemIntervention,
    _losses,
    cached_logits,
    capture_layer_input,
    full_logits,
    memorisation_inputs,
    memorised_text,
)
from mmneuron_bench.interventions.kinds import build_fastmem
from mmneuron_bench.interventions.mask import Deactivation
from mmneuron_bench.lmms.evaluate import evaluate
from mmneuron_bench.lmms.model import MMNeuronLMM
from mmneuron_bench.models.loading import load_model
from mmneuron_bench.testing import tiny_image, write_random_mask, write_tiny_task
from mmneuron_bench.testing.families import families

TASK, CHOICE_TASK = "fm_common_shapes", "fm_common_choice"
CONTEXT = "the circle is red and the square is blue ."
QUESTION = "what color is the circle ?"
# Strong enough to move the tiny model's answers in a few steps.
MOVING = {"fastmem_lr": "0.05", "fastmem_steps": "4"}

CHOICE_UTILS = """
def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def doc_to_choice(doc):
    return ["red", "blue", "green", "yellow"]
"""


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """A generation task whose documents carry a context field, and a 4-way choice task."""
    root = tmp_path_factory.mktemp("fastmem_tasks")
    folder = write_tiny_task(root, TASK, n_docs=3, seed=1)
    utils = folder / "utils.py"
    utils.write_text(
        utils.read_text().replace(
            'return doc["question"]', 'return "hint : " + doc["context"] + " " + doc["question"]'
        )
    )
    from datasets import Dataset

    data = Dataset.from_parquet(str(folder / "data.parquet"))
    data = data.add_column("context", [CONTEXT, "the square is red .", ""])
    data.to_parquet(str(folder / "data.parquet"))
    choice = write_tiny_task(root, CHOICE_TASK, n_docs=3, seed=2)
    (choice / "utils.py").write_text(CHOICE_UTILS.lstrip())
    (choice / f"{CHOICE_TASK}.yaml").write_text(
        textwrap.dedent(
            f"""\
            task: {CHOICE_TASK}
            dataset_path: parquet
            dataset_kwargs:
              data_files:
                test: data.parquet
            test_split: test
            output_type: multiple_choice
            doc_to_visual: !function utils.doc_to_visual
            doc_to_text: !function utils.doc_to_text
            doc_to_choice: !function utils.doc_to_choice
            doc_to_target: 0
            metric_list:
              - metric: acc
            """
        )
    )
    return root


def _responses(results: dict, task: str = TASK) -> list:
    samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
    return [s["filtered_resps"] for s in samples]


def _request(image, prompt: str = QUESTION, metadata: dict | None = None):
    return SimpleNamespace(
        args=(prompt, {}, lambda _doc: [image], 0, "t_task", "test"),
        metadata=metadata or {},
        task_name="t_task",
        doc_id=0,
    )


def _attached(path: Path, dtype=torch.float32, **kwargs) -> tuple:
    """A FastMem intervention attached to a freshly loaded model, and one document."""
    loaded = load_model(str(path), dtype=dtype)
    doc = {"question": QUESTION, "context": CONTEXT, "image": tiny_image(5)}
    target = Target(loaded, loaded.adapter.resolve(loaded.model), {}, document=lambda _request: doc)
    fastmem = FastMemIntervention(**kwargs)
    fastmem.attach(target)
    return fastmem, loaded, _request(doc["image"])


def _memo(fastmem, loaded, request):
    doc = fastmem._target.document(request)
    text, source = memorised_text(request, doc, fastmem.target)
    images = fastmem._images(request, doc)
    memo = memorisation_inputs(loaded.adapter, loaded.processor, images, text, source)
    return memo, fastmem.to_model(memo.inputs)


def _state(model) -> dict:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def _same_state(model, before: dict) -> bool:
    now = model.state_dict()
    return now.keys() == before.keys() and all(torch.equal(now[k], before[k]) for k in before)


def test_it_trains_the_last_mlps_three_projections(tiny_llava_next):
    fastmem, loaded, _ = _attached(tiny_llava_next)
    assert list(fastmem.parts.linears) == [
        f"model.language_model.layers.1.mlp.{name}"
        for name in ("gate_proj", "up_proj", "down_proj")
    ]
    assert fastmem.parts.layer is loaded.model.model.language_model.layers[-1]
    assert fastmem.describe()["trained"] == list(fastmem.parts.linears)


def test_the_memorised_text_is_labelled_alone_after_the_image(tiny_llava_next):
    fastmem, loaded, request = _attached(tiny_llava_next)
    memo, _ = _memo(fastmem, loaded, request)
    tokenizer = loaded.processor.tokenizer
    text_ids = tokenizer(CONTEXT, add_special_tokens=False).input_ids
    assert memo.text == CONTEXT and memo.source == "context"
    assert memo.n_labelled == len(text_ids) + 1  # the text and the end-of-turn token
    assert memo.targets.tolist() == [*text_ids, tokenizer.eos_token_id]
    ids = memo.inputs["input_ids"][0]
    image = loaded.adapter.image_token_id(loaded.model)
    assert (ids == image).sum() > 0 and not (memo.targets == image).any()
    assert (ids[: -memo.n_labelled] == image).any()  # the image comes before the text


def test_what_is_memorised_follows_the_target_and_the_task(tiny_llava_next):
    image = tiny_image(1)
    doc = {"question": QUESTION, "hint": "a hint .", "context": "", "answer": "red"}
    assert memorised_text(_request(image), doc) == ("a hint .", "hint")
    assert memorised_text(_request(image), doc, "question") == (QUESTION, "question")
    declared = _request(image, metadata={"fastmem_context": "answer"})
    assert memorised_text(declared, doc) == ("red", "answer")
    assert memorised_text(_request(image), {"question": QUESTION}) == (QUESTION, "question")
    bare = _request(image, prompt="<image>\nwhat is this ?")
    assert memorised_text(bare, {"ocr_tokens": ["stop", "sign"]}) == ("stop sign", "ocr_tokens")
    assert memorised_text(bare, {}) == ("what is this ?", "prompt")
    with pytest.raises(MMNeuronError, match="declares fastmem_context: lecture"):
        memorised_text(_request(image, metadata={"fastmem_context": "lecture"}), doc)


def test_a_cached_last_layer_step_equals_a_full_forward_step(tiny_llava_next):
    """Loss and gradients of the cached path (last layer, final norm, LM head) match a whole
    forward, in float64, at weights away from the reference so that the KL term counts."""
    fastmem, loaded, request = _attached(tiny_llava_next, dtype=torch.float64)
    memo, inputs = _memo(fastmem, loaded, request)
    n, targets = memo.n_labelled, memo.targets
    with fastmem.swapped() as weights:
        with torch.no_grad():
            reference = full_logits(loaded.model, inputs, n).log_softmax(-1)
            generator = torch.Generator().manual_seed(0)
            for param in weights.trained:
                param.add_(0.05 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
        cached = capture_layer_input(loaded.model, loaded.adapter, fastmem.parts, inputs)
        results = []
        for logits in (
            cached_logits(fastmem.parts, cached, n),
            full_logits(loaded.model, inputs, n),
        ):
            nll, kl = _losses(logits.log_softmax(-1), targets, reference)
            loss = nll + 0.1 * kl
            results.append((loss, kl, torch.autograd.grad(loss, weights.trained)))
    (loss_c, kl_c, grads_c), (loss_f, kl_f, grads_f) = results
    assert float(kl_f.detach()) > 1e-4  # the weights moved: the KL term is in play
    torch.testing.assert_close(loss_c, loss_f, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kl_c, kl_f, rtol=1e-12, atol=1e-12)
    for grad_c, grad_f in zip(grads_c, grads_f, strict=True):
        assert grad_f.abs().max() > 0
        torch.testing.assert_close(grad_c, grad_f, rtol=1e-10, atol=1e-12)


def test_the_loss_falls_and_the_kl_term_is_zero_at_step_0(tiny_llava_next):
    fastmem, loaded, request = _attached(tiny_llava_next, lr=1e-2, steps=6)
    before = _state(loaded.model)
    with fastmem.for_document(request):
        assert not _same_state(loaded.model, before)  # the memorised weights are in place
    [record] = fastmem.records
    assert record["losses"][0][1] == 0.0  # KL(p_ref || p_theta) at step 0
    assert all(kl > 0 for _, kl in record["losses"][1:])
    assert record["nll_after"] < record["losses"][-1][0] < record["nll_before"]
    assert record["nll_before"] == record["losses"][0][0]
    assert _same_state(loaded.model, before)
    assert all(p.grad is None for p in loaded.model.parameters())


def test_weights_come_back_bit_identical_after_every_document(tiny_llava_next, task_dir):
    lm = MMNeuronLMM(pretrained=str(tiny_llava_next), device="cpu", fastmem=1, **MOVING)
    fastmem = lm.interventions.get("fastmem")
    params = dict(lm.model.named_parameters())
    before = _state(lm.model)
    inside: list[bool] = []
    enter = fastmem.for_document

    @contextmanager
    def checked(request):
        with enter(request):
            inside.append(_same_state(lm.model, before))
            yield
        assert _same_state(lm.model, before)  # after this document, before the next
        assert all(p is params[n] for n, p in lm.model.named_parameters())

    fastmem.for_document = checked
    evaluate(lm, [TASK], task_manager([TASK], [str(task_dir)], lm.base_name))
    assert inside == [False, False, False]  # three documents, each memorised
    assert all(p.grad is None for p in lm.model.parameters())
    described = lm.describe()["fastmem"]
    assert described["tasks"][TASK]["documents"] == 3
    assert described["tasks"][TASK]["text_from"] == {"context": 2, "question": 1}


def test_steps_0_gives_the_base_answers_and_memorising_moves_them(tiny_llava_next, task_dir):
    manager = task_manager([TASK], [str(task_dir)], "llava_hf")
    base = _responses(
        evaluate(MMNeuronLMM(pretrained=str(tiny_llava_next), device="cpu"), [TASK], manager)
    )
    zero = MMNeuronLMM(pretrained=str(tiny_llava_next), device="cpu", fastmem=1, fastmem_steps="0")
    assert _responses(evaluate(zero, [TASK], manager)) == base
    assert zero.interventions.get("fastmem").records == []
    moved = MMNeuronLMM(pretrained=str(tiny_llava_next), device="cpu", fastmem=1, **MOVING)
    assert _responses(evaluate(moved, [TASK], manager)) != base


def test_contrastive_decoding_mixes_the_memorised_and_original_logits(tiny_llava_next):
    fastmem, loaded, request = _attached(tiny_llava_next, lr=1e-2, steps=4, cd=0.5)
    memo, _ = _memo(fastmem, loaded, request)
    prompt = loaded.adapter.build_inputs(loaded.processor, [tiny_image(5)], [QUESTION])
    model = loaded.model
    with fastmem.swapped() as weights, torch.no_grad():
        fastmem.memorise(memo, weights)
        z_mem = model(**prompt).logits
        weights.use("original")
        z_orig = model(**prompt).logits
        weights.use("memorised")
        assert not torch.equal(z_mem, z_orig)
        with fastmem.contrastive(weights):
            z_cd = model(**prompt).logits
            generated = model.generate(
                **prompt, max_new_tokens=5, min_new_tokens=5, do_sample=False
            )
        torch.testing.assert_close(z_cd, 1.5 * z_mem - 0.5 * z_orig, rtol=1e-5, atol=1e-5)
        # The same tokens from a loop of whole forwards without a KV cache, mixing by hand.
        ids, mask = prompt["input_ids"], prompt["attention_mask"]
        for _ in range(5):
            step = {**prompt, "input_ids": ids, "attention_mask": mask}
            mixed = 1.5 * model(**step).logits[:, -1]
            weights.use("original")
            mixed = mixed - 0.5 * model(**step).logits[:, -1]
            weights.use("memorised")
            ids = torch.cat([ids, mixed.argmax(-1, keepdim=True)], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    assert torch.equal(generated, ids)


def test_contrastive_decoding_with_alpha_0_is_plain_decoding(tiny_llava_next, task_dir):
    fastmem, loaded, request = _attached(tiny_llava_next, lr=1e-2, steps=3, cd=0.0)
    memo, _ = _memo(fastmem, loaded, request)
    prompt = loaded.adapter.build_inputs(loaded.processor, [tiny_image(5)], [QUESTION])
    with fastmem.swapped() as weights, torch.no_grad():
        fastmem.memorise(memo, weights)
        plain = loaded.model(**prompt).logits
        with fastmem.contrastive(weights):
            assert torch.equal(loaded.model(**prompt).logits, plain)
    manager = task_manager([TASK], [str(task_dir)], "llava_hf")
    path = str(tiny_llava_next)
    answers = [
        _responses(
            evaluate(
                MMNeuronLMM(pretrained=path, device="cpu", fastmem=1, **MOVING, **cd),
                [TASK],
                manager,
            )
        )
        for cd in ({}, {"fastmem_cd": "0"})
    ]
    assert answers[0] == answers[1]


def test_masked_neurons_get_zero_gradient_and_stay_off(tiny_llava_next):
    fastmem, loaded, request = _attached(tiny_llava_next, lr=1e-2, steps=5)
    components = loaded.adapter.resolve(loaded.model)
    infos = {c.name: c.info for c in components}
    off = torch.tensor([3, 17, 40, 79])
    masks = {
        ("d", name): torch.zeros(i.layers, i.width, dtype=torch.bool) for name, i in infos.items()
    }
    masks[("d", "llm")][-1, off] = True
    mask = NeuronMask(["d"], infos, {}, "test", {}, None, masks)
    memo, inputs = _memo(fastmem, loaded, request)
    gate, up, down = fastmem.parts.linears.values()
    originals = [
        gate.weight.detach().clone(),
        up.weight.detach().clone(),
        down.weight.detach().clone(),
    ]
    act = fastmem.parts.mlp.act_fn
    seen = []
    with Deactivation(components, mask):
        with fastmem.swapped() as weights:
            cached = capture_layer_input(loaded.model, loaded.adapter, fastmem.parts, inputs)
            logits = cached_logits(fastmem.parts, cached, memo.n_labelled)
            loss = torch.nn.functional.cross_entropy(logits, memo.targets)
            grads = torch.autograd.grad(loss, weights.trained)
            assert grads[0][off].abs().max() == 0 and grads[1][off].abs().max() == 0
            assert grads[2][:, off].abs().max() == 0 and grads[2].abs().max() > 0
            fastmem.memorise(memo, weights)
            g, u, d = weights.trained
            assert not torch.equal(g, originals[0])
            assert torch.equal(g[off], originals[0][off]) and torch.equal(u[off], originals[1][off])
            assert torch.equal(d[:, off], originals[2][:, off])
            handle = act.register_forward_hook(lambda _m, _a, out: seen.append(out[..., off]))
            with torch.no_grad():
                loaded.model(**fastmem.to_model(memo.inputs))
            handle.remove()
    assert seen and all(float(s.abs().max()) == 0.0 for s in seen)  # still off, on the copies


def test_it_composes_with_a_mask_in_the_mmneuron_model(tiny_llava_next, task_dir, tmp_path):
    path = tmp_path / "m.mask.safetensors"
    write_random_mask(tiny_llava_next, path, seed=3, domains=("common",))
    lm = MMNeuronLMM(
        pretrained=str(tiny_llava_next), device="cpu", mask=str(path), fastmem=1, **MOVING
    )
    assert [i.kind for i in lm.interventions.ordered] == ["mask", "fastmem"]
    results = evaluate(lm, [TASK], task_manager([TASK], [str(task_dir)], lm.base_name))
    assert len(_responses(results)) == 3
    described = lm.describe()
    assert described["mask"]["domains"] == {TASK: ["common"]}
    assert described["fastmem"]["tasks"][TASK]["documents"] == 3


def test_a_loglikelihood_task_memorises_once_per_document(tiny_llava_next, task_dir):
    lm = MMNeuronLMM(pretrained=str(tiny_llava_next), device="cpu", fastmem=1, **MOVING)
    manager = task_manager([CHOICE_TASK], [str(task_dir)], lm.base_name)
    results = evaluate(lm, [CHOICE_TASK], manager)
    records = lm.interventions.get("fastmem").records
    assert sorted(r["doc_id"] for r in records) == [0, 1, 2]  # 12 requests, 3 memorisations
    samples = results["samples"][CHOICE_TASK]
    assert all(len(s["filtered_resps"]) == 4 for s in samples)
    plain = MMNeuronLMM(pretrained=str(tiny_llava_next), device="cpu")
    before = evaluate(plain, [CHOICE_TASK], manager)["samples"][CHOICE_TASK]
    assert [s["filtered_resps"] for s in samples] != [s["filtered_resps"] for s in before]


def test_half_precision_trains_fp32_copies_and_restores_the_bf16_weights(tiny_llava_next):
    fastmem, loaded, request = _attached(tiny_llava_next, dtype=torch.bfloat16, lr=1e-2, steps=3)
    before = _state(loaded.model)
    with fastmem.for_document(request):
        weights = [m.weight for m in fastmem.parts.linears.values()]
        assert all(w.dtype == torch.float32 for w in weights)
        prompt = loaded.adapter.build_inputs(loaded.processor, [tiny_image(5)], [QUESTION])
        prompt["pixel_values"] = prompt["pixel_values"].to(torch.bfloat16)
        with torch.no_grad():
            assert loaded.model(**prompt).logits.dtype == torch.bfloat16
    assert fastmem.records[0]["nll_after"] < fastmem.records[0]["nll_before"]
    assert _same_state(loaded.model, before)
    assert all(m.weight.dtype == torch.bfloat16 for m in fastmem.parts.linears.values())


@pytest.mark.parametrize("family", sorted(families()))
def test_every_family_memorises_its_context_and_gets_its_weights_back(tiny_checkpoint_dir, family):
    fastmem, loaded, request = _attached(tiny_checkpoint_dir[family], lr=0.05, steps=3)
    before = _state(loaded.model)
    memo, inputs = _memo(fastmem, loaded, request)
    labelled = loaded.processor.tokenizer.decode(inputs["input_ids"][0, -memo.n_labelled :])
    # The context's own tokens ("and" is not in the tiny vocabularies), then the end token.
    assert "the circle is red <unk> the square is blue ." in " ".join(labelled.split())
    with fastmem.swapped() as weights:
        record = fastmem.memorise(memo, weights)
    assert record["nll_after"] < record["nll_before"]
    assert _same_state(loaded.model, before)


def test_instructblip_memorises_without_a_chat_template(tiny_instructblip):
    fastmem, loaded, request = _attached(tiny_instructblip, lr=1e-2, steps=3)
    before = _state(loaded.model)
    with fastmem.for_document(request):
        pass
    [record] = fastmem.records
    assert record["nll_after"] < record["nll_before"]
    assert _same_state(loaded.model, before)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"fastmem": "1", "fastmem_lr": "fast"}, "fastmem_lr='fast': expected a number"),
        ({"fastmem": "1", "fastmem_lr": "0"}, "fastmem_lr=0.0: expected a learning rate > 0"),
        ({"fastmem": "1", "fastmem_steps": "-1"}, "fastmem_steps=-1: expected 0 or more"),
        ({"fastmem": "1", "fastmem_steps": "2.5"}, "fastmem_steps='2.5': expected an integer"),
        ({"fastmem": "1", "fastmem_target": "answer"}, "fastmem_target='answer': expected one of"),
        ({"fastmem": "1", "fastmem_cd": "-1"}, "fastmem_cd=-1.0: expected an alpha >= 0"),
        ({"fastmem": "maybe"}, "fastmem='maybe': expected 1 .on. or 0 .off."),
    ],
)
def test_bad_arguments_are_one_line_errors(args, message):
    with pytest.raises(MMNeuronError, match=message):
        build_fastmem(args)


def test_arguments_as_the_cli_and_lmms_eval_give_them():
    assert build_fastmem({"fastmem": "0", "fastmem_lr": "1"}) is None
    default = build_fastmem({"fastmem": 1})
    assert (default.lr, default.steps, default.kl, default.target, default.cd) == (
        1e-5,
        10,
        0.1,
        "context",
        None,
    )
    assert build_fastmem({"fastmem": True, "fastmem_cd": True}).cd == 0.5
    assert build_fastmem({"fastmem": "1", "fastmem_cd": "true"}).cd == 0.5
    assert build_fastmem({"fastmem": "1", "fastmem_cd": 0.25}).cd == 0.25
    assert build_fastmem({"fastmem": "1", "fastmem_cd": "off"}).cd is None


def test_fastmem_needs_the_mmneuron_model(tiny_llava_next):
    loaded = load_model(str(tiny_llava_next))
    target = Target(loaded, loaded.adapter.resolve(loaded.model), {})
    with pytest.raises(MMNeuronError, match="fastmem needs each request's document"):
        FastMemIntervention().attach(target)
    with pytest.raises(MMNeuronError, match="fastmem_lr= needs fastmem="):
        MMNeuronLMM(pretrained=str(tiny_llava_next), device="cpu", fastmem_lr="1e-3")


def test_run_takes_it_as_an_intervention_and_the_grid_adds_its_rows(
    tiny_llava_next, task_dir, tmp_path
):
    mask = tmp_path / "m.mask.safetensors"
    write_random_mask(tiny_llava_next, mask, seed=5, domains=("common",))
    common = [
        "--pretrained",
        str(tiny_llava_next),
        "--tasks",
        TASK,
        "--include-path",
        str(task_dir),
    ]
    fastmem = [
        "--intervention",
        "fastmem=1",
        "--intervention",
        "fastmem_lr=0.05",
        "--intervention",
        "fastmem_steps=4",
    ]
    single = tmp_path / "single"
    result = CliRunner().invoke(build_cli(), ["run", *common, *fastmem, "--output", str(single)])
    assert result.exit_code == 0, result.output
    provenance = json.loads((single / "provenance.json").read_text())
    assert provenance["settings"]["interventions"]["fastmem"] == "1"
    grid = tmp_path / "grid"
    args = ["run", *common, *fastmem, "--mask", str(mask), "--grid", "--output", str(grid)]
    result = CliRunner(env={"COLUMNS": "200"}).invoke(build_cli(), args)
    assert result.exit_code == 0, result.output
    table = json.loads((grid / "grid.json").read_text())
    assert table["extra_rows"] == ["fastmem"]
    cells = {(c["module_set"], c["mask"]): c["value"] for c in table["cells"]}
    assert set(cells) == {(m, "dape") for m in ("none", "vision", "connector", "llm", "all")} | {
        ("none", "fastmem"),
        ("all", "fastmem"),
    }
    value = json.loads(next(single.glob("results.json")).read_text())["results"][TASK]
    assert cells[("none", "fastmem")] == value["exact_match,none"]
    assert "all + fastmem" in result.output and "│ fastmem" in result.output
    # The extra rows' changes are paired with the plain row (nothing off, no FastMem).
    from mmneuron_bench.analysis.uncertainty import change
    from mmneuron_bench.lmms.grid import Cell, cell_changes

    scores = {(c["module_set"], c["mask"]): c["scores"] for c in table["cells"]}
    changes = cell_changes(table["cells"])
    assert Cell("none", "dape", TASK) not in changes
    for row in (("none", "fastmem"), ("all", "fastmem"), ("all", "dape")):
        expected = change(scores[("none", "dape")], scores[row])
        assert changes[Cell(*row, TASK)] == expected
    again = CliRunner().invoke(build_cli(), args)  # resumes: every cell is there
    assert again.exit_code == 0 and "resuming: 7 of 7" in again.output


def test_bench_reports_fastmem_per_document_as_ratios_to_a_plain_answer(tiny_llava_next):
    args = ["bench", "--pretrained", str(tiny_llava_next), "--batch-size", "1", "--repeats", "2"]
    result = CliRunner().invoke(
        build_cli(), [*args, "--fastmem", "--fastmem-steps", "2", "--new-tokens", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)["fastmem"]
    assert set(figures["ratios"]) == {"plain", "fastmem", "fastmem_cd"}
    assert figures["ratios"]["plain"] == 1.0 and figures["ratios"]["fastmem"] > 1.0
    assert figures["new_tokens"] == 3 and figures["labelled_tokens"] > 0
    # fp32 copies of three 40x80 matrices, their gradients and two Adam moments, at least.
    assert figures["state_bytes"] >= 4 * 3 * 40 * 80 * 4
    assert figures["memory_ratios"]["fastmem"] is None  # CUDA only
