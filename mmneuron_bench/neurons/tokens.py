"""Tokens as users name them: a word, a token id, or a neurons file's domain name."""

from __future__ import annotations

import re
from typing import Any

from mmneuron_bench.errors import MMNeuronError
from mmneuron_bench.formats.mask import NeuronMask


def token_domain(token: int, text: str) -> str:
    """A mask domain name for a token: ``tok<ID>_<letters and digits of its text>``."""
    return f"tok{token}_{re.sub(r'[^0-9A-Za-z]+', '', text)[:24]}"


def token_text(tokenizer: Any, token: int) -> str:
    """The decoded text of one token (what a user types as a word)."""
    return tokenizer.decode([token]).strip() or tokenizer.convert_ids_to_tokens(token)


def resolve_token(mask: NeuronMask, tokenizer: Any, word: str) -> str:
    """The domain of ``word`` in a contribution mask: a domain name, a token id or a word."""
    tokens = mask.params.get("tokens", {})
    if word in tokens:
        return word
    ids = tokenizer.encode(word, add_special_tokens=False)
    candidates = [d for d, t in tokens.items() if len(ids) == 1 and t["id"] == ids[0]]
    candidates = candidates or [d for d, t in tokens.items() if t["text"] == word.strip()]
    if len(candidates) == 1:
        return candidates[0]
    known = ", ".join(t["text"] for t in list(tokens.values())[:10])
    raise MMNeuronError(
        f"token {word!r} is not among the neurons file's tokens (e.g. {known})"
        if not candidates
        else f"{word!r} matches several tokens of the neurons file: {', '.join(candidates)}"
    )


def single_token(tokenizer: Any, word: str) -> int:
    """The id of a word that is exactly one token."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise MMNeuronError(f"{word!r} is {len(ids)} tokens {pieces}, not one token")
    unknown = tokenizer.unk_token_id
    if ids[0] == unknown and word.strip() != tokenizer.unk_token:
        raise MMNeuronError(f"{word!r} is not in the vocabulary (it becomes {tokenizer.unk_token})")
    return ids[0]
