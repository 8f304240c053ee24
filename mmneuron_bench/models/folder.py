"""Model folders that cannot load, refused in one line naming the folder and the file.

Checked before any weight is read: every ``*.safetensors`` weights file of a local folder is
complete (an interrupted download leaves it shorter than its header says), every shard an
index lists exists, and the processor (tokenizer, image processor) loads. Whatever
``from_pretrained`` still refuses while loading (a pickled ``.bin`` that torch will not
unpickle safely) is said in one line too (:func:`loading_errors`).
"""

from __future__ import annotations

import contextlib
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.models.adapter import ModelAdapter

WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# Files a tokenizer is read from (any one of them); only used to say which file is missing.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "tekken.json",
)
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
_LOAD_ERRORS = (OSError, ValueError, SafetensorError, pickle.UnpicklingError, EOFError)
# What from_pretrained reads from a folder besides weights and tokenizer files.
_CONFIG_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "video_preprocessor_config.json",
)


def model_files(pretrained: str) -> list[Path]:
    """The files of a local model folder that loading reads (config, weights and their
    shards, tokenizer and processor files); none for a hub id."""
    folder = Path(pretrained)
    if not folder.is_dir():
        return []
    names = [*_CONFIG_FILES, *WEIGHT_INDEXES, "model.safetensors", "pytorch_model.bin"]
    names += [*TOKENIZER_FILES, *PROCESSOR_FILES]
    for index in WEIGHT_INDEXES:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
            names += json.loads((folder / index).read_text())["weight_map"].values()
    return [folder / name for name in dict.fromkeys(names) if (folder / name).exists()]


def check_model_folder(pretrained: str, adapter: ModelAdapter) -> None:
    """Refuse, before any weight is loaded, a model whose weights files are incomplete or
    missing, or whose processor does not load (the processor is loaded and dropped: it takes
    a fraction of a second)."""
    folder = Path(pretrained)
    if folder.is_dir():
        for index in WEIGHT_INDEXES:
            if (folder / index).is_file():
                _check_index(folder, index)
        for path in sorted(folder.glob("*.safetensors")):
            _check_safetensors(folder, path)
    load_processor(pretrained, adapter)


def load_processor(pretrained: str, adapter: ModelAdapter) -> Any:
    """The model's processor; one that does not load is one line naming the folder and, where
    it can be told, the missing file."""
    try:
        return adapter.load_processor(pretrained)
    except _LOAD_ERRORS as exc:
        why = _missing_processor_file(Path(pretrained)) or _text(exc)
        raise MMNeuronError(f"{pretrained}: cannot load the processor ({why})") from None


@contextlib.contextmanager
def loading_errors(pretrained: str) -> Iterator[None]:
    """Turn what ``from_pretrained`` raises for a broken folder into one line naming it."""
    try:
        yield
    except _LOAD_ERRORS as exc:
        why = _pickle_problem(Path(pretrained)) if isinstance(exc, pickle.UnpicklingError) else None
        raise MMNeuronError(f"{pretrained}: cannot load the model ({why or _text(exc)})") from None


def _check_index(folder: Path, index: str) -> None:
    try:
        shards = set(json.loads((folder / index).read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MMNeuronError(f"{folder}: {index} is not a readable weights index ({exc})") from None
    for shard in sorted(shards):
        if not (folder / shard).is_file():
            raise MMNeuronError(f"{folder}: {shard}, listed in {index}, is missing")


def _check_safetensors(folder: Path, path: Path) -> None:
    """The file is as long as its header says (a truncated download is not)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if size < 8 or 8 + length > size:
                raise ValueError("its header is cut off")
            header = json.loads(f.read(length))
        end = max(
            (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
            default=0,
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise MMNeuronError(
            f"{folder}: {path.name} is not a readable safetensors file ({exc})"
        ) from None
    expected = 8 + length + end
    if size != expected:
        raise MMNeuronError(
            f"{folder}: {path.name} has {size} bytes where its header describes {expected} "
            "(an interrupted download?)"
        )


def _missing_processor_file(folder: Path) -> str | None:
    """Which file a local folder lacks for its processor, if it can be told."""
    if not folder.is_dir():
        return None
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return f"no tokenizer file: none of {', '.join(TOKENIZER_FILES)}"
    if not any((folder / name).is_file() for name in PROCESSOR_FILES):
        return f"no {' or '.join(PROCESSOR_FILES)}"
    return None


def _pickle_problem(folder: Path) -> str:
    names = sorted(p.name for p in folder.glob("*.bin")) if folder.is_dir() else []
    which = ", ".join(names) or "a pickled weights file"
    return f"{which}: torch refuses to unpickle it safely; convert it to safetensors"


def _text(exc: BaseException) -> str:
    """An exception's message on one line (its first 300 characters)."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__
