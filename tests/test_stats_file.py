"""mmneuron-stats/1 files: round trip, atomic writes, validation of damaged files, merging."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mmneuron_bench.errors import FileFormatError, MaskMismatchError, MMNeuronError
from mmneuron_bench.formats.atomic import all_or_nothing, atomic_path, atomic_write
from mmneuron_bench.formats.stats import ActivationStats, merge
from mmneuron_bench.models.components import ComponentInfo

COMPONENTS = {
    "vision": ComponentInfo("vision", "vision", 2, 6),
    "projector": ComponentInfo("projector", "connector", 1, 4),
    "llm": ComponentInfo("llm", "llm", 3, 5),
}
MODEL = {"adapter": "llava_next", "name_or_path": "tiny", "fingerprint": "abc123"}


def make_stats(seed: int = 0, **overrides) -> ActivationStats:
    """Consistent random statistics over domains a and b."""
    g = torch.Generator().manual_seed(seed)
    stats = ActivationStats.empty(["a", "b"], COMPONENTS, MODEL, "all")
    for c in COMPONENTS:
        tokens = torch.randint(1, 50, stats.tokens[c].shape, generator=g)
        stats.tokens[c] = tokens
        stats.active[c] = (
            torch.rand(stats.active[c].shape, generator=g) * (tokens + 1).unsqueeze(-1)
        ).long()
        stats.sum[c] = torch.randn(stats.sum[c].shape, generator=g, dtype=torch.float64)
    stats.samples = {"a": 3 + seed, "b": 4}
    for key, value in overrides.items():
        setattr(stats, key, value)
    return stats


def assert_same(x: ActivationStats, y: ActivationStats) -> None:
    assert (x.domains, x.components, x.model, x.token_scope, x.samples) == (
        y.domains,
        y.components,
        y.model,
        y.token_scope,
        y.samples,
    )
    for field in ("active", "tokens", "sum"):
        a, b = getattr(x, field), getattr(y, field)
        assert a.keys() == b.keys() and all(torch.equal(a[c], b[c]) for c in a)


def test_empty_has_zero_tensors_of_the_right_shapes():
    stats = ActivationStats.empty(["a", "b", "c"], COMPONENTS, MODEL, "image")
    assert stats.samples == {"a": 0, "b": 0, "c": 0}
    assert stats.active["llm"].shape == (3, 3, 5) and stats.active["llm"].dtype == torch.int64
    assert stats.tokens["vision"].shape == (3, 2) and stats.tokens["vision"].dtype == torch.int64
    assert stats.sum["projector"].shape == (3, 1, 4) and stats.sum["llm"].dtype == torch.float64
    assert not any(t.any() for t in stats.active.values())


def test_round_trip_and_metadata(tmp_path):
    stats = make_stats()
    path = tmp_path / "run.stats.safetensors"
    stats.save(path)
    assert_same(ActivationStats.load(path), stats)
    with safe_open(path, "pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["format"] == "mmneuron-stats/1"
    assert json.loads(meta["domains"]) == ["a", "b"]
    assert json.loads(meta["components"])["llm"] == {"role": "llm", "layers": 3, "width": 5}
    assert json.loads(meta["model"]) == MODEL
    assert meta["token_scope"] == "all"
    assert json.loads(meta["samples"]) == {"a": 3, "b": 4}
    assert keys == {f"{c}.{s}" for c in COMPONENTS for s in ("active", "tokens", "sum")}


def test_activation_probability():
    stats = make_stats()
    stats.tokens["llm"][1, 2] = 0
    stats.active["llm"][1, 2] = 0
    p = stats.activation_probability("llm")
    assert p.dtype == torch.float64 and p.shape == (2, 3, 5)
    assert not p[1, 2].any()
    assert (
        p[0, 1, 3].item() == stats.active["llm"][0, 1, 3].item() / stats.tokens["llm"][0, 1].item()
    )


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"

    def half_write(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_write)
    assert list(tmp_path.iterdir()) == []

    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path
            half_write(tmp)
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]

    atomic_write(target, lambda tmp: tmp.write_bytes(b"new"))
    assert target.read_bytes() == b"new" and list(tmp_path.iterdir()) == [target]


def test_files_written_together_appear_together_or_not_at_all(tmp_path, monkeypatch):
    a, b = tmp_path / "a.json", tmp_path / "b.stats.safetensors"
    a.write_text("old")
    with pytest.raises(RuntimeError, match="failed later"):
        with all_or_nothing():
            atomic_write(a, lambda tmp: tmp.write_text("new"))
            with all_or_nothing():  # an inner block hands its files to the outer one
                make_stats().save(b)
            assert a.read_text() == "old" and not b.exists()
            raise RuntimeError("failed later")
    assert sorted(tmp_path.iterdir()) == [a] and a.read_text() == "old"
    with all_or_nothing():
        atomic_write(a, lambda tmp: tmp.write_text("new"))
        make_stats().save(b)
    assert a.read_text() == "new" and ActivationStats.load(b).samples == make_stats().samples
    assert sorted(tmp_path.iterdir()) == [a, b]


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "run.stats.safetensors"
    make_stats(seed=1).save(path)
    before = path.read_bytes()

    def broken_save(tensors, filename, metadata):
        open(filename, "wb").write(b"half")
        raise OSError("no space left on device")

    monkeypatch.setattr("mmneuron_bench.formats.stats.save_file", broken_save)
    with pytest.raises(MMNeuronError, match=r"cannot write \(no space left on device\)"):
        make_stats(seed=2).save(path)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


def test_save_refuses_inconsistent_object(tmp_path):
    stats = make_stats()
    stats.active["llm"] = stats.active["llm"].float()
    with pytest.raises(FileFormatError, match="dtype"):
        stats.save(tmp_path / "bad.stats.safetensors")
    assert list(tmp_path.iterdir()) == []


def raw_parts(stats: ActivationStats) -> tuple[dict, dict]:
    """The tensors and metadata `save` would write, for corrupting before writing directly."""
    tensors = {}
    for c in stats.components:
        tensors[f"{c}.active"] = stats.active[c]
        tensors[f"{c}.tokens"] = stats.tokens[c]
        tensors[f"{c}.sum"] = stats.sum[c]
    meta = {
        "format": "mmneuron-stats/1",
        "domains": json.dumps(stats.domains),
        "components": json.dumps({c: i.to_meta() for c, i in stats.components.items()}),
        "model": json.dumps(stats.model),
        "token_scope": stats.token_scope,
        "samples": json.dumps(stats.samples),
    }
    return tensors, meta


def corrupt(tensors: dict, meta: dict, case: str) -> None:
    """Apply one named corruption in place."""
    if case == "wrong format":
        meta["format"] = "mmneuron-mask/1"
    elif case.startswith("missing metadata "):
        del meta[case.removeprefix("missing metadata ")]
    elif case == "invalid JSON":
        meta["samples"] = "{a: 1"
    elif case == "bad components":
        meta["components"] = json.dumps({"llm": {"role": "decoder", "layers": 3, "width": 5}})
    elif case == "duplicate domains":
        meta["domains"] = json.dumps(["a", "a"])
    elif case == "domains not a list":
        meta["domains"] = json.dumps("a")
    elif case == "bad token scope":
        meta["token_scope"] = "video"
    elif case == "samples of other domains":
        meta["samples"] = json.dumps({"a": 1, "z": 2})
    elif case == "negative samples":
        meta["samples"] = json.dumps({"a": 1, "b": -2})
    elif case == "model not an object":
        meta["model"] = json.dumps(["llava"])
    elif case == "missing tensor":
        del tensors["llm.sum"]
    elif case == "extra tensor":
        tensors["other.active"] = torch.zeros(2, 1, 1, dtype=torch.int64)
    elif case == "wrong dtype":
        tensors["vision.active"] = tensors["vision.active"].int()
    elif case == "wrong shape":
        tensors["llm.tokens"] = torch.ones(2, 4, dtype=torch.int64)
    elif case == "width disagrees with metadata":
        meta["components"] = json.dumps(
            {
                c: {**i.to_meta(), "width": 9} if c == "llm" else i.to_meta()
                for c, i in COMPONENTS.items()
            }
        )
    elif case == "negative count":
        tensors["llm.active"] = tensors["llm.active"].clone()
        tensors["llm.active"][0, 0, 0] = -1
    elif case == "sum not finite":
        tensors["llm.sum"] = tensors["llm.sum"].clone()
        tensors["llm.sum"][1, 0, 3] = float("nan")
    elif case == "active exceeds tokens":
        tensors["vision.active"] = tensors["vision.active"].clone()
        tensors["vision.active"][1, 1, 2] = tensors["vision.tokens"][1, 1] + 1
    else:
        raise AssertionError(case)


CASES = {  # corruption -> expected fragment of the message
    "wrong format": "its format is 'mmneuron-mask/1'",
    "missing metadata format": "no 'format' metadata",
    "missing metadata domains": "'domains' is missing",
    "missing metadata components": "'components' is missing",
    "missing metadata model": "'model' is missing",
    "missing metadata token_scope": "'token_scope' is missing",
    "missing metadata samples": "'samples' is missing",
    "invalid JSON": "'samples' is not valid JSON",
    "bad components": "'components' is invalid",
    "duplicate domains": "names a domain twice",
    "domains not a list": "'domains' is not a JSON list",
    "bad token scope": "'token_scope' is 'video'",
    "samples of other domains": "'samples' must give",
    "negative samples": "'samples' must give",
    "model not an object": "'model' is not a JSON object",
    "missing tensor": "'llm.sum' is missing",
    "extra tensor": "unexpected tensor 'other.active'",
    "wrong dtype": "'vision.active' has dtype torch.int32",
    "wrong shape": "'llm.tokens' has shape",
    "width disagrees with metadata": "'llm.active' has shape",
    "negative count": "'llm' has negative counts",
    "active exceeds tokens": "'vision' has a neuron active on more tokens",
    "sum not finite": "'llm' has sums that are NaN or infinite",
}


def assert_one_line_error(path, match: str | None = None) -> None:
    with pytest.raises(FileFormatError, match=match) as info:
        ActivationStats.load(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


@pytest.mark.parametrize("case", CASES)
def test_damaged_file_is_refused_with_one_line(tmp_path, case):
    tensors, meta = raw_parts(make_stats())
    corrupt(tensors, meta, case)
    path = tmp_path / "bad.stats.safetensors"
    save_file(tensors, path, metadata=meta)
    assert_one_line_error(path, re.escape(CASES[case]))


def test_missing_garbage_and_truncated_files(tmp_path):
    assert_one_line_error(tmp_path / "absent.stats.safetensors", "no such file")
    garbage = tmp_path / "garbage.stats.safetensors"
    garbage.write_bytes(b"\x00\x01 this is not safetensors" * 10)
    assert_one_line_error(garbage, "safetensors")
    good = tmp_path / "good.stats.safetensors"
    make_stats().save(good)
    truncated = tmp_path / "truncated.stats.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    assert_one_line_error(truncated, "safetensors")


def test_merge_sums_counts_and_samples():
    x, y = make_stats(seed=1), make_stats(seed=2)
    y.model = {**MODEL, "name_or_path": "/elsewhere/tiny"}  # same model under another path
    merged = merge([x, y])
    assert merged.samples == {"a": 4 + 5, "b": 8}
    for c in COMPONENTS:
        assert torch.equal(merged.active[c], x.active[c] + y.active[c])
        assert torch.equal(merged.tokens[c], x.tokens[c] + y.tokens[c])
        assert torch.equal(merged.sum[c], x.sum[c] + y.sum[c])
    assert merged.model == MODEL
    assert_same(merge([x]), x)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"model": {**MODEL, "fingerprint": "other"}}, "model fingerprint"),
        ({"model": {**MODEL, "adapter": "llava"}}, "model adapter"),
        ({"token_scope": "text"}, "token_scope"),
        ({"domains": ["b", "a"]}, "domains"),
        ({"components": {**COMPONENTS, "llm": ComponentInfo("llm", "llm", 3, 6)}}, "'llm'"),
        ({"components": {"vision": COMPONENTS["vision"], "llm": COMPONENTS["llm"]}}, "'projector'"),
    ],
)
def test_merge_refuses_mismatches(overrides, field):
    with pytest.raises(MaskMismatchError, match=field) as info:
        merge([make_stats(), make_stats(seed=1, **overrides)])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("ids", "text"),
    [
        ([], ""),
        ([4], "4"),
        ([0, 1, 2, 5, 7, 9], "0-2,5-9:2"),
        ([0, 2, 4, 6, 8], "0-8:2"),  # one process of two
        ([3, 10], "3,10"),
        ([1, 2, 3, 4, 10, 11], "1-4,10-11"),
    ],
)
def test_document_ids_are_written_as_ranges_and_read_back(ids, text):
    from mmneuron_bench.formats.documents import decode_ids, encode_ids

    assert encode_ids(ids) == text
    assert decode_ids(text, len(ids)) == ids


@pytest.mark.parametrize("text", ["5-3", "1-4:2", "0-4,3", "a", "-1", "0-99999999999"])
def test_malformed_document_ranges_are_refused(text):
    from mmneuron_bench.formats.documents import decode_ids

    with pytest.raises(ValueError):
        decode_ids(text, 10)


def test_documents_round_trip_merge_and_validation(tmp_path):
    x = make_stats(seed=1, documents={"a": {"t": [0, 1, 2], "u": [0]}, "b": {"t": [3, 4, 5, 6]}})
    y = make_stats(seed=2, documents={"a": {"t": [3, 4, 5, 6, 7]}, "b": {"u": [0, 1, 2, 3]}})
    path = tmp_path / "x.stats.safetensors"
    x.save(path)
    with safe_open(path, "pt") as f:
        assert json.loads(f.metadata()["documents"]) == {
            "a": {"t": "0-2", "u": "0"},
            "b": {"t": "3-6"},
        }
    assert ActivationStats.load(path).documents == x.documents
    merged = merge([x, y])
    assert merged.documents == {
        "a": {"t": list(range(8)), "u": [0]},
        "b": {"t": [3, 4, 5, 6], "u": [0, 1, 2, 3]},
    }
    again = {"a": {"t": [1, 2, 8, 9, 10]}, "b": {"t": [7, 8, 9, 10]}}
    twice = r"domain 'a', task 't': 2 documents \(1-2\) counted in stats 1 too"
    with pytest.raises(MaskMismatchError, match=twice):
        merge([x, make_stats(seed=2, documents=again)])
    assert merge([x, make_stats(seed=2)]).documents is None  # one file does not say
    short = make_stats(seed=1, documents={"a": {"t": [0, 1, 2]}, "b": {"t": [0, 1, 2, 3]}})
    with pytest.raises(FileFormatError, match="lists 3 documents of domain 'a', 'samples' 4"):
        short.save(path)
