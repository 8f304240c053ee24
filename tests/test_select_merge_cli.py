"""`select` and `merge` commands: DAPE and random masks from files, merging, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors import SafetensorError

from mmneuron_bench.cli import build_cli
from mmneuron_bench.formats.common import sha256_file
from mmneuron_bench.formats.mask import NeuronMask
from mmneuron_bench.formats.stats import ActivationStats
from mmneuron_bench.models.components import ComponentInfo
from mmneuron_bench.selection.dape import dape_mask
from mmneuron_bench.selection.random import select_random_like

MODEL = {"adapter": "llava_next", "name_or_path": "tiny", "fingerprint": "abc123"}
COMPONENTS = {
    "vision": ComponentInfo("vision", "vision", 2, 150),
    "llm": ComponentInfo("llm", "llm", 3, 200),
}


def cli(*args) -> object:
    return CliRunner(env={"COLUMNS": "200"}).invoke(build_cli(), [str(a) for a in args])


def random_stats(seed: int = 0, domains=("a", "b", "c"), components=None, **overrides):
    """Consistent random statistics; about 5 % of neurons are far more active in one domain."""
    g = torch.Generator().manual_seed(seed)
    stats = ActivationStats.empty(domains, components or COMPONENTS, MODEL, "all")
    for c, tokens in stats.tokens.items():
        tokens.copy_(torch.randint(50, 100, tokens.shape, generator=g))
        p = torch.rand(stats.active[c].shape, generator=g) * 0.3
        special = torch.rand(p.shape[1:], generator=g) < 0.05  # high in one random domain
        domain = torch.randint(len(domains), p.shape[1:], generator=g)
        p[domain, torch.arange(p.shape[1])[:, None], torch.arange(p.shape[2])] += 0.7 * special
        stats.active[c] = (p * tokens.unsqueeze(-1)).long()
        stats.sum[c] = torch.rand(stats.sum[c].shape, generator=g, dtype=torch.float64)
    stats.samples = {d: 2 + seed + i for i, d in enumerate(domains)}
    for key, value in overrides.items():
        setattr(stats, key, value)
    return stats


def assert_masks_equal(x: NeuronMask, y: NeuronMask) -> None:
    assert (x.domains, x.components, x.model) == (y.domains, y.components, y.model)
    assert x.masks.keys() == y.masks.keys()
    assert all(torch.equal(x.masks[k], y.masks[k]) for k in x.masks)


def assert_one_line_error(result, exit_code: int, *fragments) -> None:
    assert result.exit_code == exit_code, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    for fragment in fragments:
        assert str(fragment) in result.output


@pytest.fixture
def stats_path(tmp_path):
    path = tmp_path / "run.stats.safetensors"
    random_stats().save(path)
    return path


# --- select: DAPE


def test_select_hand_worked_case(tmp_path):
    # 10 tokens per layer, so p = active / 10. Rates 0.5: k = round(0.5 * D*L*N) -> median.
    # llm (2 layers x 3), p(a, b) per neuron (flat index):
    #   0: (.9, 0)  H=0   1: (.5, .5) H=ln2   2: (0, .8) H=0
    #   3: (.7, 0)  H=0   4: (.6, 0)  H=0     5: (.3, .3) no p > tau
    #   sorted p: 0 0 0 0 .3 .3 .5 .5 .6 .7 .8 .9, k=6: tau=bar=.3; 3 neurons with H=0 tie:
    #   the smallest flat indices 0, 2, 3 win; 0 and 3 belong to a, 2 to b.
    # projector (1 layer x 4), p(a, b): (.5, 0), (.1, .1), (0, .6), (.4, .4)
    #   sorted p: 0 0 .1 .1 .4 .4 .5 .6, k=4: tau=bar=.1; neuron 1 has no p > tau;
    #   2 selected: neurons 0 (H=0, a) and 2 (H=0, b).
    components = {
        "projector": ComponentInfo("projector", "connector", 1, 4),
        "llm": ComponentInfo("llm", "llm", 2, 3),
    }
    stats = ActivationStats.empty(["a", "b"], components, MODEL, "image")
    stats.active["llm"] = torch.tensor([[[9, 5, 0], [7, 6, 3]], [[0, 5, 8], [0, 0, 3]]])
    stats.active["projector"] = torch.tensor([[[5, 1, 0, 4]], [[0, 1, 6, 4]]])
    for tokens in stats.tokens.values():
        tokens.fill_(10)
    path = tmp_path / "hand.stats.safetensors"
    stats.save(path)
    out = tmp_path / "hand.mask.safetensors"
    rates = ["--top-rate", "0.5", "--filter-rate", "0.5", "--bar-ratio", "0.5"]

    result = cli("select", path, "--out", out, *rates)

    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == f"wrote {out}"
    mask = NeuronMask.load(out)
    expected = {
        ("a", "llm"): [[1, 0, 0], [1, 0, 0]],
        ("b", "llm"): [[0, 0, 1], [0, 0, 0]],
        ("a", "projector"): [[1, 0, 0, 0]],
        ("b", "projector"): [[0, 0, 1, 0]],
    }
    assert {k: m.int().tolist() for k, m in mask.masks.items()} == expected
    assert (mask.method, mask.model, mask.source) == ("dape", MODEL, sha256_file(path))
    assert mask.params == {"top_rate": 0.5, "filter_rate": 0.5, "activation_bar_ratio": 0.5}
    # Rows: domains, then neurons selected for any domain and all neurons; columns: projector,
    # llm (the components in file order).
    table_rows = [line.split() for line in result.stdout.splitlines()]
    assert ["│", "a", "│", "1", "│", "2", "│"] in table_rows
    assert ["│", "b", "│", "1", "│", "1", "│"] in table_rows
    assert ["│", "any", "domain", "│", "2", "│", "3", "│"] in table_rows
    assert ["│", "neurons", "│", "4", "│", "6", "│"] in table_rows


@pytest.mark.parametrize(
    "rates",
    [
        {},
        {"top_rate": 0.05, "filter_rate": 0.9, "bar_ratio": 0.8},
        {"top_rate": 0.02, "filter_rate": 0.5, "bar_ratio": 0.99},
    ],
    ids=["defaults", "custom", "high-bar"],
)
def test_select_matches_dape_mask(tmp_path, stats_path, rates):
    out = tmp_path / "out.mask.safetensors"
    options = [x for k, v in rates.items() for x in (f"--{k.replace('_', '-')}", v)]

    result = cli("select", stats_path, "--out", out, *options)

    assert result.exit_code == 0, result.output
    mask = NeuronMask.load(out)
    expected = dape_mask(ActivationStats.load(stats_path), **rates, source=sha256_file(stats_path))
    assert_masks_equal(mask, expected)
    assert mask.params == expected.params and mask.source == expected.source
    assert any(m.any() for m in mask.masks.values())


# --- select: random control


def test_random_mask_matches_counts_and_is_deterministic(tmp_path, stats_path):
    dape = tmp_path / "dape.mask.safetensors"
    assert cli("select", stats_path, "--out", dape, "--top-rate", "0.05").exit_code == 0
    like = NeuronMask.load(dape)
    outs = {}
    for name, seed in (("r1", 3), ("r2", 3), ("r3", 4)):
        outs[name] = tmp_path / f"{name}.mask.safetensors"
        args = ["--method", "random", "--like", dape, "--seed", seed]
        result = cli("select", "--out", outs[name], *args)
        assert result.exit_code == 0, result.output
        assert result.stdout.strip().splitlines()[-1] == f"wrote {outs[name]}"
    r1, r2, r3 = (NeuronMask.load(outs[n]) for n in ("r1", "r2", "r3"))

    for mask in (r1, r3):
        assert mask.method == "random" and mask.source == like.source
        for key, m in mask.masks.items():
            assert torch.equal(m.sum(1), like.masks[key].sum(1))
    assert r1.params["seed"] == 3 and r1.params["like"]["method"] == "dape"
    assert_masks_equal(r1, r2)
    assert_masks_equal(r1, select_random_like(like, 3))
    assert any(not torch.equal(r1.masks[k], r3.masks[k]) for k in r1.masks)
    assert any(not torch.equal(r1.masks[k], like.masks[k]) for k in r1.masks)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["STATS", "--like", "LIKE"], "--like needs --method random"),
        (["STATS", "--seed", "1"], "--seed needs --method random"),
        ([], "needs a STATS file"),
        (["STATS", "--method", "random"], "needs --like"),
        (["--method", "random"], "needs --like"),
        (["STATS", "--method", "random", "--like", "LIKE"], "takes no STATS"),
        (["--method", "random", "--like", "LIKE", "--top-rate", "0.1"], "--top-rate applies"),
        (["--method", "random", "--like", "LIKE", "--bar-ratio", "0.1"], "--bar-ratio applies"),
    ],
)
def test_select_refuses_option_combinations(tmp_path, stats_path, args, fragment):
    like = tmp_path / "like.mask.safetensors"
    dape_mask(ActivationStats.load(stats_path)).save(like)
    out = tmp_path / "out.mask.safetensors"
    paths = {"STATS": stats_path, "LIKE": like}

    result = cli("select", *(paths.get(a, a) for a in args), "--out", out)

    assert_one_line_error(result, 2, fragment)
    assert not out.exists()


# --- merge


def test_merge_sums_counts_and_samples(tmp_path):
    parts = [random_stats(seed) for seed in (1, 2, 3)]
    paths = [tmp_path / f"shard{i}.stats.safetensors" for i in range(3)]
    for stats, path in zip(parts, paths, strict=True):
        stats.save(path)
    out = tmp_path / "all.stats.safetensors"

    result = cli("merge", *paths, "--out", out)

    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == f"wrote {out}"
    merged = ActivationStats.load(out)
    assert merged.samples == {d: sum(s.samples[d] for s in parts) for d in ("a", "b", "c")}
    assert (merged.domains, merged.components, merged.model, merged.token_scope) == (
        ["a", "b", "c"],
        COMPONENTS,
        MODEL,
        "all",
    )
    for field in ("active", "tokens", "sum"):
        for c in COMPONENTS:
            total = sum(getattr(s, field)[c] for s in parts)
            assert torch.equal(getattr(merged, field)[c], total), (field, c)
    samples_a = str(merged.samples["a"])
    tokens_a = [str(int(merged.tokens[c][0, 0])) for c in COMPONENTS]
    assert ["│", "a", "│", samples_a, "│", tokens_a[0], "│", tokens_a[1], "│"] in [
        line.split() for line in result.stdout.splitlines()
    ]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"domains": ["a", "c"]}, "domains differs"),
        (
            {"components": {"llm": COMPONENTS["llm"], "vision": COMPONENTS["vision"]}},
            "component",
        ),
        ({"model": {**MODEL, "fingerprint": "other"}}, "model fingerprint differs"),
        ({"token_scope": "image"}, "token_scope differs"),
    ],
    ids=["domains", "components", "fingerprint", "token-scope"],
)
def test_merge_refuses_mismatches(tmp_path, overrides, fragment):
    first, second = tmp_path / "one.stats.safetensors", tmp_path / "two.stats.safetensors"
    random_stats(1, domains=("a", "b")).save(first)
    if "components" in overrides:
        other = random_stats(2, domains=("a", "b"), components={"llm": COMPONENTS["llm"]})
    else:
        other = random_stats(2, domains=overrides.pop("domains", ("a", "b")), **overrides)
    other.save(second)
    out = tmp_path / "out.stats.safetensors"

    result = cli("merge", first, second, "--out", out)

    assert_one_line_error(result, 1, fragment, f"cannot merge {second} into {first}")
    assert not out.exists()


def test_merge_refuses_the_same_samples_twice(tmp_path, stats_path):
    copy = tmp_path / "copy.stats.safetensors"
    copy.write_bytes(stats_path.read_bytes())
    out = tmp_path / "out.stats.safetensors"
    for args, problem in (
        ([stats_path, stats_path], f"{stats_path} is given twice"),
        ([stats_path, copy], f"{copy} duplicates {stats_path}"),
    ):
        result = cli("merge", *args, "--out", out)
        assert_one_line_error(result, 1, problem, "count its samples twice")
        assert not out.exists()


# --- bad files, for both commands


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing", "wrong format"])
@pytest.mark.parametrize("command", ["select", "merge", "select random"])
def test_bad_input_file_is_one_line_naming_it(tmp_path, stats_path, damage, command):
    mask_path = tmp_path / "like.mask.safetensors"
    dape_mask(ActivationStats.load(stats_path)).save(mask_path)
    good, other = (mask_path, stats_path) if command == "select random" else (stats_path, mask_path)
    bad = tmp_path / "bad.safetensors"
    if damage == "garbage":
        bad.write_bytes(b"not a safetensors file at all")
    elif damage == "truncated":
        bad.write_bytes(good.read_bytes()[:-100])
    elif damage == "wrong format":  # a mask where stats are expected, and the reverse
        bad.write_bytes(other.read_bytes())
    out = tmp_path / "out.safetensors"
    args = {
        "select": ["select", bad],
        "merge": ["merge", stats_path, bad],
        "select random": ["select", "--method", "random", "--like", bad],
    }[command]

    result = cli(*args, "--out", out)

    assert_one_line_error(result, 1, bad)
    assert not out.exists()


@pytest.mark.parametrize("command", ["select", "merge"])
def test_unwritable_output_is_one_line(tmp_path, stats_path, command):
    out = tmp_path / "no" / "such" / "dir" / "out.safetensors"
    args = ["select", stats_path] if command == "select" else ["merge", stats_path]

    result = cli(*args, "--out", out)

    assert_one_line_error(result, 1, out, "cannot write")
    assert not out.parent.exists()


@pytest.mark.parametrize("command", ["select", "merge"])
def test_failed_write_is_one_line_and_leaves_nothing(tmp_path, stats_path, monkeypatch, command):
    def disk_full(tensors, path, metadata=None):
        Path(path).write_bytes(b"partial")
        raise SafetensorError("disk full")

    module = "mask" if command == "select" else "stats"
    monkeypatch.setattr(f"mmneuron_bench.formats.{module}.save_file", disk_full)
    out = tmp_path / "out.safetensors"

    result = cli(command, stats_path, "--out", out)

    assert_one_line_error(result, 1, out, "cannot write (disk full)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.stats.safetensors"]
