"""mmneuron-mask/1 files: round trip, selection helpers, model matching, damaged files."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mmneuron_bench.errors import FileFormatError, MaskMismatchError, MMNeuronError
from mmneuron_bench.formats.common import sha256_file
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.stats import ActivationStats
from mmneuron_bench.models.components import ComponentInfo

COMPONENTS = {
    "vision": ComponentInfo("vision", "vision", 2, 6),
    "qformer": ComponentInfo("qformer", "connector", 1, 4),
    "llm": ComponentInfo("llm", "llm", 3, 5),
}
MODEL = {"adapter": "instructblip", "name_or_path": "tiny", "fingerprint": "abc"}
DOMAINS = ["med", "auto", "doc"]


def make_mask(seed: int = 0, source: str | None = "0f" * 32) -> NeuronMask:
    g = torch.Generator().manual_seed(seed)
    masks = {
        (d, c): torch.rand(i.layers, i.width, generator=g) < 0.3
        for d in DOMAINS
        for c, i in COMPONENTS.items()
    }
    params = {"top_rate": 0.01, "filter_rate": 0.95, "activation_bar_ratio": 0.95}
    return NeuronMask(DOMAINS, COMPONENTS, MODEL, "dape", params, source, masks)


def assert_same(x: NeuronMask, y: NeuronMask) -> None:
    assert (x.domains, x.components, x.model, x.method, x.params, x.source) == (
        y.domains,
        y.components,
        y.model,
        y.method,
        y.params,
        y.source,
    )
    assert x.masks.keys() == y.masks.keys()
    assert all(torch.equal(x.masks[k], y.masks[k]) for k in x.masks)


def test_round_trip_and_metadata(tmp_path):
    mask = make_mask()
    path = tmp_path / "m.mask.safetensors"
    mask.save(path)
    assert_same(NeuronMask.load(path), mask)
    with safe_open(path, "pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["format"] == "mmneuron-mask/1"
    assert json.loads(meta["domains"]) == DOMAINS
    assert json.loads(meta["components"])["qformer"] == {
        "role": "connector",
        "layers": 1,
        "width": 4,
    }
    assert json.loads(meta["model"]) == MODEL and meta["method"] == "dape"
    assert json.loads(meta["params"])["top_rate"] == 0.01 and meta["source"] == "0f" * 32
    assert keys == {f"{d}/{c}" for d in DOMAINS for c in COMPONENTS}


def test_mask_without_source_round_trips(tmp_path):
    mask = make_mask(source=None)
    mask.save(tmp_path / "m.mask.safetensors")
    assert NeuronMask.load(tmp_path / "m.mask.safetensors").source is None


def test_select_unions_domains_and_filters_roles():
    mask = make_mask()
    both = mask.select(["med", "doc"], ["vision", "llm"])
    assert set(both) == {"vision", "llm"}
    assert torch.equal(both["llm"], mask.masks[("med", "llm")] | mask.masks[("doc", "llm")])
    everything = mask.select("all", "all")
    assert set(everything) == set(COMPONENTS)
    expected = mask.masks[("med", "qformer")] | mask.masks[("auto", "qformer")]
    assert torch.equal(everything["qformer"], expected | mask.masks[("doc", "qformer")])
    assert mask.select(["auto"], ["connector"]).keys() == {"qformer"}
    assert torch.equal(mask.select("doc", "vision")["vision"], mask.masks[("doc", "vision")])
    assert not mask.select([], "all")["vision"].any()
    assert mask.select(["med"], []) == {}


def test_select_refuses_unknown_domain_or_role():
    with pytest.raises(MaskMismatchError, match="'news'"):
        make_mask().select(["med", "news"], "all")
    with pytest.raises(ValueError, match="decoder"):
        make_mask().select("all", ["decoder"])


def test_count():
    mask = make_mask()
    counts = mask.count()
    assert set(counts) == {(d, c) for d in DOMAINS for c in COMPONENTS}
    assert counts[("auto", "llm")] == int(mask.masks[("auto", "llm")].sum())


@pytest.mark.parametrize(
    ("model_components", "match"),
    [
        ({c: i for c, i in COMPONENTS.items() if c != "qformer"}, "'qformer'"),
        ({**COMPONENTS, "extra": ComponentInfo("extra", "llm", 1, 2)}, "'extra'"),
        ({**COMPONENTS, "llm": ComponentInfo("llm", "llm", 4, 5)}, "'llm'.*3 layers.*4 layers"),
        ({**COMPONENTS, "llm": ComponentInfo("llm", "llm", 3, 8)}, "'llm'.*x 5.*x 8"),
        ({**COMPONENTS, "qformer": ComponentInfo("qformer", "vision", 1, 4)}, "role connector"),
    ],
)
def test_check_matches_names_the_mismatch(model_components, match):
    mask = make_mask()
    mask.check_matches(dict(COMPONENTS))
    with pytest.raises(MaskMismatchError, match=match) as info:
        mask.check_matches(model_components)
    assert "\n" not in str(info.value)


def test_sha256_file(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"neurons" * 1000)
    assert sha256_file(path) == hashlib.sha256(b"neurons" * 1000).hexdigest()


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    def broken_save(tensors, filename, metadata):
        open(filename, "wb").write(b"half")
        raise OSError("no space left on device")

    monkeypatch.setattr("mmneuron_bench.formats.mask.save_file", broken_save)
    with pytest.raises(MMNeuronError, match=r"cannot write \(no space left on device\)"):
        make_mask().save(tmp_path / "m.mask.safetensors")
    assert list(tmp_path.iterdir()) == []


def raw_parts(mask: NeuronMask) -> tuple[dict, dict]:
    tensors = {f"{d}/{c}": m for (d, c), m in mask.masks.items()}
    meta = {
        "format": "mmneuron-mask/1",
        "domains": json.dumps(mask.domains),
        "components": json.dumps({c: i.to_meta() for c, i in mask.components.items()}),
        "model": json.dumps(mask.model),
        "method": mask.method,
        "params": json.dumps(mask.params),
        "source": mask.source,
    }
    return tensors, meta


CASES = {  # expected fragment of the message -> corruption
    "its format is": lambda t, m: m.update(format="mmneuron-stats/1"),
    "'method' is missing": lambda t, m: m.pop("method"),
    "'method' is empty": lambda t, m: m.update(method=""),
    "'params' is missing": lambda t, m: m.pop("params"),
    "'params' is not a JSON object": lambda t, m: m.update(params="[1, 2]"),
    "'model' is not valid JSON": lambda t, m: m.update(model="{"),
    "'source' is not a sha256": lambda t, m: m.update(source="not-a-hash"),
    "contains '/'": lambda t, m: m.update(domains=json.dumps(["med/x", "auto", "doc"])),
    "'domains' must be a non-empty list": lambda t, m: m.update(domains="[]"),
    "lists no component": lambda t, m: m.update(components="{}"),
    "'doc/llm' is missing": lambda t, m: t.pop("doc/llm"),
    "unexpected tensor 'news/llm'": lambda t, m: t.update(
        {"news/llm": torch.zeros(3, 5, dtype=torch.bool)}
    ),
    "'med/vision' has dtype torch.uint8": lambda t, m: t.update(
        {"med/vision": torch.zeros(2, 6, dtype=torch.uint8)}
    ),
    "'auto/qformer' has shape [1, 5]": lambda t, m: t.update(
        {"auto/qformer": torch.zeros(1, 5, dtype=torch.bool)}
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_file_is_refused_with_one_line(tmp_path, case):
    tensors, meta = raw_parts(make_mask())
    CASES[case](tensors, meta)
    path = tmp_path / "bad.mask.safetensors"
    save_file(tensors, path, metadata=meta)
    with pytest.raises(FileFormatError, match=re.escape(case)) as info:
        NeuronMask.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_stats_file_is_not_a_mask(tmp_path):
    path = tmp_path / "x.stats.safetensors"
    ActivationStats.empty(["a"], COMPONENTS, MODEL, "all").save(path)
    with pytest.raises(FileFormatError, match="not a mmneuron-mask/1 file"):
        NeuronMask.load(path)
    with pytest.raises(FileFormatError, match="no such file"):
        NeuronMask.load(tmp_path / "absent.mask.safetensors")
