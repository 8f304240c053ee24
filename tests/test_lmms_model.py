"""The `mmneuron` lmms-eval model on lmms-eval's shipped tasks, with tiny local data.

Tasks are include-path YAMLs that `include:` lmms-eval's own `docvqa_val`, `vqav2_val` and
`seedbench_ppl` (their prompts, utils and metrics) and swap the hub dataset for a tiny parquet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from choices import choice_nll

from mmneuron_bench.domains.tasks import task_manager
from mmneuron_bench.errors import MaskMismatchError, MMNeuronError
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.interventions.mask import Deactivation
from mmneuron_bench.interventions.targets import DomainChoice, auto_domain, parse_modules
from mmneuron_bench.lmms.evaluate import evaluate
from mmneuron_bench.lmms.model import MMNeuronLMM
from mmneuron_bench.lmms.workarounds import base_kwargs, checked_generate, import_base
from mmneuron_bench.models.loading import load_model
from mmneuron_bench.testing import tiny_image

DOMAINS = ["common", "documents"]
DOCVQA, VQAV2, SEEDBENCH = "t_documents_docvqa", "t_common_vqav2", "t_common_seedbench"
POST_PROMPT = "\nAnswer the question using a single word or phrase."
LIMIT = 2


def _shipped(relative: str) -> Path:
    import lmms_eval

    return Path(lmms_eval.__file__).parent / "tasks" / relative


def _include_task(root: Path, name: str, shipped: str, split: str, rows: dict, features) -> Path:
    """A task `name` that is the shipped YAML with a local parquet instead of the hub data."""
    from datasets import Dataset

    folder = root / name
    folder.mkdir(parents=True)
    Dataset.from_dict(rows, features=features).to_parquet(str(folder / "data.parquet"))
    (folder / f"{name}.yaml").write_text(
        f"include: {_shipped(shipped)}\ntask: {name}\ndataset_path: parquet\n"
        f"dataset_name: null\ndataset_kwargs:\n  data_files:\n    {split}: data.parquet\n"
    )
    return folder


def _docvqa(root: Path, name: str, answers: list[list[str]]) -> None:
    from datasets import Features, Image, Sequence, Value

    n = len(answers)
    rows = {
        "questionId": [str(i) for i in range(n)],
        "question": ["what color is the circle ?", "what is on the left ?"][:n],
        "answers": answers,
        "image": [tiny_image(10 + i) for i in range(n)],
    }
    features = Features(
        {
            "questionId": Value("string"),
            "question": Value("string"),
            "answers": Sequence(Value("string")),
            "image": Image(),
        }
    )
    _include_task(root, name, "docvqa/docvqa_val.yaml", "validation", rows, features)


def _vqav2(root: Path, name: str, answers: list[list[str]]) -> None:
    from datasets import Features, Image, Value

    n = len(answers)
    answer = Features(
        {
            "answer": Value("string"),
            "answer_confidence": Value("string"),
            "answer_id": Value("int64"),
        }
    )
    rows = {
        "question_id": list(range(n)),
        "question": ["is there a red square ?", "how many objects are there ?"][:n],
        "answer": [a[0] for a in answers],
        "answers": [
            [{"answer": a, "answer_confidence": "yes", "answer_id": j} for j, a in enumerate(doc)]
            for doc in answers
        ],
        "image": [tiny_image(20 + i) for i in range(n)],
    }
    features = Features(
        {
            "question_id": Value("int64"),
            "question": Value("string"),
            "answer": Value("string"),
            "answers": [answer],
            "image": Image(),
        }
    )
    _include_task(root, name, "vqav2/vqav2_val.yaml", "validation", rows, features)


def _seedbench(root: Path, name: str) -> None:
    from datasets import Features, Image, Sequence, Value

    n = 3
    choices = {"choice_a": "red", "choice_b": "blue", "choice_c": "green", "choice_d": "yellow"}
    rows = {
        "question": ["what color is the circle ?"] * n,
        **{key: [value] * n for key, value in choices.items()},
        "answer": ["A", "B", "C"],
        "image": [[tiny_image(30 + i)] for i in range(n)],
    }
    features = Features(
        {
            "question": Value("string"),
            **{key: Value("string") for key in choices},
            "answer": Value("string"),
            "image": Sequence(Image()),
        }
    )
    _include_task(root, name, "seedbench/seedbench_ppl.yaml", "test", rows, features)


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shipped_tasks")
    _docvqa(root, DOCVQA, [["red"], ["blue"]])
    _vqav2(root, VQAV2, [["yes"] * 10, ["2"] * 10])
    _seedbench(root, SEEDBENCH)
    return root


def _manager(task_dir: Path, base: str, names=(DOCVQA, VQAV2, SEEDBENCH)):
    return task_manager(list(names), [str(task_dir)], base)


def _random_mask(lm: MMNeuronLMM, fraction: float, seed: int) -> NeuronMask:
    generator = torch.Generator().manual_seed(seed)
    infos = {c.name: c.info for c in lm.components}
    masks = {
        (d, c): torch.rand(info.layers, info.width, generator=generator) < fraction
        for d in DOMAINS
        for c, info in infos.items()
    }
    return NeuronMask(DOMAINS, infos, lm.identity(), "random", {"p": fraction}, None, masks)


def _responses(results: dict) -> dict[str, list]:
    """Each task's filtered responses, by document id."""
    return {
        task: [s["filtered_resps"][0] for s in sorted(samples, key=lambda s: s["doc_id"])]
        for task, samples in results["samples"].items()
    }


def _unwrapped_base(name: str, pretrained: Path):
    cls = import_base(name)
    return cls(**base_kwargs(cls, {"pretrained": str(pretrained), "device": "cpu"}))


@pytest.fixture(scope="module", params=["llava_next", "instructblip"])
def family(request, tiny_checkpoint_dir, task_dir, tmp_path_factory) -> dict:
    """A wrapped model, the unwrapped base, and their responses on docvqa + vqav2."""
    path = tiny_checkpoint_dir[request.param]
    lm = MMNeuronLMM(pretrained=str(path), device="cpu")
    manager = _manager(task_dir, lm.base_name)
    tasks = [DOCVQA, VQAV2]
    files = tmp_path_factory.mktemp("masks")
    empty = _random_mask(lm, 0.0, seed=0)
    empty.save(files / "empty.mask.safetensors")
    masked = _random_mask(lm, 0.3, seed=1)
    masked.save(files / "masked.mask.safetensors")
    base = _unwrapped_base(lm.base_name, path)
    with_empty = MMNeuronLMM(
        pretrained=str(path), device="cpu", mask=str(files / "empty.mask.safetensors")
    )
    lm.set_mask(NeuronMask.load(files / "masked.mask.safetensors"))
    return {
        "name": request.param,
        "path": path,
        "lm": lm,
        "mask": masked,
        "manager": manager,
        "base": _responses(evaluate(base, tasks, manager, LIMIT)),
        "empty": evaluate(with_empty, tasks, manager, LIMIT),
        "masked": evaluate(lm, tasks, manager, LIMIT),
    }


def test_mmneuron_is_an_lmms_eval_model():
    from importlib.metadata import entry_points

    from lmms_eval.models import get_model

    assert "mmneuron" in {ep.name for ep in entry_points(group="lmms_eval.models")}
    assert get_model("mmneuron") is MMNeuronLMM


def test_llava_hf_imports_without_decord_and_the_stand_in_is_gone_afterwards():
    import importlib.util

    assert importlib.util.find_spec("decord") is None  # the lock installs no decord
    module = sys.modules[import_base("llava_hf").__module__]
    assert "decord" not in sys.modules and "torchvision" not in sys.modules
    with pytest.raises(MMNeuronError, match="decord or torchvision, which are not installed"):
        module.VideoReader("clip.mp4")


def test_empty_mask_gives_the_unwrapped_base_models_responses(family):
    ours, base = _responses(family["empty"]), family["base"]
    assert set(ours) == {DOCVQA, VQAV2} and all(len(r) == LIMIT for r in ours.values())
    if family["name"] == "llava_next":
        assert ours == base
        return
    # lmms-eval 0.7.3's instructblip returns prompt + answer on transformers 5; ours the answer.
    from transformers import AutoProcessor

    lm, processor = family["lm"], AutoProcessor.from_pretrained(family["path"])
    for task, samples in family["empty"]["samples"].items():
        for sample, answer, echoed in zip(samples, ours[task], base[task], strict=True):
            assert echoed.endswith(answer) and len(echoed) > len(answer)
            doc = lm.task_dict[task]["validation"][sample["doc_id"]]
            image, context = doc["image"].convert("RGB"), sample["arguments"][0]
            inputs = processor(images=[image], text=context, return_tensors="pt")
            out = lm.model.generate(
                **inputs, do_sample=False, max_new_tokens=sample["arguments"][1]["max_new_tokens"]
            )
            new = out[0, inputs["input_ids"].shape[1] :]
            assert processor.tokenizer.decode(new, skip_special_tokens=True).strip() == answer


def test_a_mask_changes_responses_with_each_tasks_own_domain(family):
    empty, masked = _responses(family["empty"]), _responses(family["masked"])
    assert masked != empty
    described = family["lm"].describe()["mask"]
    assert described["domains"] == {DOCVQA: ["documents"], VQAV2: ["common"]}
    mask = family["mask"]
    for task, domain in ((DOCVQA, "documents"), (VQAV2, "common")):
        expected = {c: int(m.sum()) for c, m in mask.select(domain).items()}
        assert described["deactivated"][task] == expected


def test_hooks_are_gone_after_evaluation(family):
    for component in family["lm"].components:
        assert all(not module._forward_hooks for module in component.modules)


def _levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


@pytest.mark.parametrize("family", ["llava_next"], indirect=True)
def test_the_shipped_utils_and_metrics_score_the_responses(family, task_dir, tmp_path):
    """Answers made from the model's own responses give the VQA and ANLS scores we expect."""
    said = _responses(family["empty"])
    d0, d1 = (r.strip() for r in said[DOCVQA])
    v0, v1 = (r.strip() for r in said[VQAV2])
    docvqa_answers = [[d0], [d1[:-3] + "qqq"]]
    vqav2_answers = [[v0] * 10, [v1] + ["zzz"] * 9]
    _docvqa(tmp_path, "t_documents_docvqa2", docvqa_answers)
    _vqav2(tmp_path, "t_common_vqav22", vqav2_answers)
    names = ["t_documents_docvqa2", "t_common_vqav22"]
    lm = MMNeuronLMM(pretrained=str(family["path"]), device="cpu")
    results = evaluate(lm, names, task_manager(names, [str(tmp_path)], lm.base_name), LIMIT)
    assert _responses(results) == {
        "t_documents_docvqa2": said[DOCVQA],
        "t_common_vqav22": said[VQAV2],
    }

    def vqa(pred: str, answers: list[str]) -> float:  # official VQA accuracy
        scores = [
            min(1.0, sum(o == pred for o in answers[:i] + answers[i + 1 :]) / 3) for i in range(10)
        ]
        return sum(scores) / 10

    def anls(pred: str, answers: list[str]) -> float:
        best = max(
            1 - _levenshtein(a.lower(), pred.lower()) / max(len(a), len(pred)) for a in answers
        )
        return best if best >= 0.5 else 0.0

    expected_vqa = (vqa(v0, vqav2_answers[0]) + vqa(v1, vqav2_answers[1])) / 2
    expected_anls = (anls(d0, docvqa_answers[0]) + anls(d1, docvqa_answers[1])) / 2
    assert expected_vqa == pytest.approx(0.65) and 0.5 < expected_anls < 1.0
    assert results["results"]["t_common_vqav22"]["exact_match,none"] == pytest.approx(expected_vqa)
    assert results["results"]["t_documents_docvqa2"]["anls,none"] == pytest.approx(expected_anls)
    manager = task_manager(names, [str(tmp_path)], lm.base_name)
    loaded = manager.load_task_or_group(names)
    scorer = loaded["t_common_vqav22"].config.process_results
    assert scorer.__name__ == "vqav2_process_results_val"
    assert Path(scorer.__code__.co_filename) == _shipped("vqav2/utils.py")
    assert "vqav2_process_results_val" in str(
        results["configs"]["t_common_vqav22"]["process_results"]
    )
    assert results["configs"]["t_documents_docvqa2"]["metric_list"][0]["metric"] == "anls"
    for task in names:
        for sample in results["samples"][task]:
            assert sample["arguments"][0].endswith(POST_PROMPT)


def test_one_model_runs_under_two_masks_in_one_process(tiny_llava_next, task_dir):
    lm = MMNeuronLMM(pretrained=str(tiny_llava_next), device="cpu")
    manager = _manager(task_dir, lm.base_name, [VQAV2])
    first, second = _random_mask(lm, 0.3, seed=5), _random_mask(lm, 0.3, seed=6)
    runs = []
    for mask in (first, second, first):
        lm.set_mask(mask, domain="all", modules="llm")
        runs.append(_responses(evaluate(lm, [VQAV2], manager, LIMIT)))
    assert runs[0] == runs[2] and runs[0] != runs[1]
    # The same mask installed by hand around the unwrapped base gives the same responses.
    base = _unwrapped_base("llava_hf", tiny_llava_next)
    components = lm.adapter.resolve(base.model)
    with Deactivation(components, first, domains="all", roles=["llm"]):
        assert _responses(evaluate(base, [VQAV2], manager, LIMIT)) == runs[0]


def test_a_multiple_choice_task_runs_on_loglikelihood(tiny_llava_next, task_dir):
    from transformers import AutoProcessor

    lm = MMNeuronLMM(pretrained=str(tiny_llava_next), device="cpu")
    manager = _manager(task_dir, lm.base_name, [SEEDBENCH])
    results = evaluate(lm, [SEEDBENCH], manager)
    processor = AutoProcessor.from_pretrained(tiny_llava_next)
    samples = sorted(results["samples"][SEEDBENCH], key=lambda s: s["doc_id"])
    correct = 0
    for sample, gold in zip(samples, [0, 1, 2], strict=True):
        doc = lm.task_dict[SEEDBENCH]["test"][sample["doc_id"]]
        image = doc["image"][0].convert("RGB")
        context = sample["arguments"][0]
        assert context == f"{doc['question']} Answer :"  # the shipped seed_doc_to_text_mc
        choices = (doc["choice_a"], doc["choice_b"], doc["choice_c"], doc["choice_d"])
        expected = [choice_nll(processor, lm.model, image, context, f" {c}") for c in choices]
        got = [nll for nll, _greedy in sample["filtered_resps"]]
        assert got == pytest.approx(expected, rel=1e-5)
        correct += min(range(4), key=expected.__getitem__) == gold
    assert results["results"][SEEDBENCH]["acc,none"] == pytest.approx(correct / 3)
    # The mask applies to loglikelihood requests too.
    lm.set_mask(_random_mask(lm, 0.3, seed=2))
    masked = evaluate(lm, [SEEDBENCH], manager)["samples"][SEEDBENCH]
    nll = [[x for x, _ in s["filtered_resps"]] for s in sorted(masked, key=lambda s: s["doc_id"])]
    assert nll != [[x for x, _ in s["filtered_resps"]] for s in samples]


def test_instructblip_answers_multiple_choice_too(tiny_instructblip, task_dir):
    lm = MMNeuronLMM(pretrained=str(tiny_instructblip), device="cpu")
    results = evaluate(lm, [SEEDBENCH], _manager(task_dir, lm.base_name, [SEEDBENCH]), LIMIT)
    for sample in results["samples"][SEEDBENCH]:
        assert len(sample["filtered_resps"]) == 4
        assert all(nll > 0 and isinstance(greedy, bool) for nll, greedy in sample["filtered_resps"])


def test_a_failed_generation_is_an_error_not_an_empty_answer(tiny_llava_next, tmp_path):
    from mmneuron_bench.testing import write_tiny_task

    folder = write_tiny_task(tmp_path, "t_common_broken", n_docs=1)
    yaml = folder / "t_common_broken.yaml"
    yaml.write_text(yaml.read_text().replace("  do_sample: false", "  num_beams: 0"))
    lm = MMNeuronLMM(pretrained=str(tiny_llava_next), device="cpu")
    manager = task_manager(["t_common_broken"], [str(tmp_path)], lm.base_name)
    with pytest.raises(MMNeuronError, match="generation failed: ZeroDivisionError"):
        evaluate(lm, ["t_common_broken"], manager)


def test_the_generate_patch_puts_back_what_was_there(tiny_llava_next):
    """The class's generate comes back as it was; so does a generate the instance had of its
    own (another wrapper's)."""
    model = load_model(str(tiny_llava_next)).model
    with checked_generate(model, slice_prompt=True):
        assert "generate" in vars(model)
    assert "generate" not in vars(model)

    def wrapped(*args, **kwargs):
        return type(model).generate(model, *args, **kwargs)

    model.generate = wrapped
    with checked_generate(model, slice_prompt=True):
        assert model.generate is not wrapped
    assert model.generate is wrapped


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llava_next"], indirect=True)
def test_lmms_eval_cli_runs_the_mmneuron_model(family, task_dir, tmp_path):
    mask = tmp_path / "m.mask.safetensors"
    family["mask"].save(mask)
    args = f"pretrained={family['path']},device=cpu,mask={mask},modules=all,domain=auto"
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "lmms_eval", "--model", "mmneuron", "--model_args", args,
        "--tasks", VQAV2, "--include_path", str(task_dir), "--limit", str(LIMIT),
        "--output_path", str(out), "--log_samples", "--verbosity", "DEBUG",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    subprocess.run(command, check=True, capture_output=True, env=env, timeout=600, cwd=tmp_path)
    [samples] = out.rglob(f"*_samples_{VQAV2}.jsonl")
    rows = sorted(
        (json.loads(line) for line in samples.read_text().splitlines()), key=lambda s: s["doc_id"]
    )
    # lmms-eval's sample log keeps a lone response unwrapped.
    assert [s["filtered_resps"] for s in rows] == _responses(family["masked"])[VQAV2]


def test_domain_auto_rules():
    domains = ["common", "medical", "remote_sensing"]
    assert auto_domain("medical", domains, {}) == ["medical"]
    assert auto_domain("mmneuron_medical_pmcvqa", domains, {}) == ["medical"]
    assert auto_domain("rsvqa_remote_sensing_lite", domains, {}) == ["remote_sensing"]
    assert auto_domain("docvqa_val", domains, {"domain": "common"}) == ["common"]
    assert auto_domain("docvqa_val", domains, {"domain": "common+medical"}) == ["common", "medical"]
    assert auto_domain("common_medical_mix", domains, {"domain": "medical"}) == ["medical"]
    with pytest.raises(
        MMNeuronError,
        match=r"'docvqa_val' matches no mask domain \(mask domains: common, medical, remote_s",
    ):
        auto_domain("docvqa_val", domains, {})
    with pytest.raises(MMNeuronError, match="matches several mask domains"):
        auto_domain("common_medical_mix", domains, {})
    with pytest.raises(MMNeuronError, match="declares domain 'legal', which the mask lacks"):
        auto_domain("docvqa_val", domains, {"domain": "legal"})


def test_module_and_domain_specs():
    assert parse_modules("all") == ("vision", "connector", "llm")
    assert parse_modules("none") == ()
    assert parse_modules("llm+vision") == ("vision", "llm")
    assert DomainChoice.parse("auto").domains("docvqa_val", {"domain": "documents"}, DOMAINS) == [
        "documents"
    ]
    assert DomainChoice.parse("all").domains("any", {}, DOMAINS) == list(DOMAINS)
    both = DomainChoice.parse("documents+common")
    assert both.domains("any", {}, DOMAINS) == ["documents", "common"]
    per_task = DomainChoice.parse(["auto", "vqa=common"])
    assert per_task.domains("vqa", {}, DOMAINS) == ["common"] and per_task.text == "auto,vqa=common"
    with pytest.raises(MMNeuronError, match="modules='llm\\+eyes'"):
        parse_modules("llm+eyes")
    with pytest.raises(MMNeuronError, match="the mask has no domain 'legal'"):
        DomainChoice.parse("common+legal").check(DOMAINS)


def test_bad_model_args_are_one_line_errors(tiny_llava_next, tiny_instructblip, tmp_path):
    lm = MMNeuronLMM(pretrained=str(tiny_instructblip), device="cpu")
    foreign = tmp_path / "foreign.mask.safetensors"
    _random_mask(lm, 0.1, seed=0).save(foreign)
    with pytest.raises(MaskMismatchError, match="the mask does not match the model"):
        MMNeuronLMM(pretrained=str(tiny_llava_next), device="cpu", mask=str(foreign))
    path = str(tiny_llava_next)
    cases = [
        ({"pretrained": path, "base": "no_such_model"}, "unknown lmms-eval model 'no_such_model'"),
        ({"pretrained": path, "batch_size": 2}, "'llava_hf' generates one request at a time"),
        ({"pretrained": path, "modules": "llm"}, "modules= needs mask="),
        ({}, "the mmneuron model needs pretrained=PATH_OR_ID"),
    ]
    for kwargs, message in cases:
        with pytest.raises(MMNeuronError, match=message):
            MMNeuronLMM(device="cpu", **kwargs)
    own = tmp_path / "own.mask.safetensors"
    good = MMNeuronLMM(pretrained=str(tiny_llava_next), device="cpu")
    _random_mask(good, 0.1, seed=0).save(own)
    for kwargs, message in [
        ({"mode": "mean"}, "mode=mean needs stats=FILE"),
        ({"modules": "eyes"}, "modules='eyes'"),
        ({"domain": "legal"}, "the mask has no domain 'legal'"),
    ]:
        with pytest.raises(MMNeuronError, match=message):
            good.set_mask(NeuronMask.load(own), **kwargs)
