"""The appearance reference bank: what the appearance net writes and the UNet's self-attention reads.

Both sides are ComfyUI ``attn1_patch`` callables — ``patch(n, context, value, extra_options) ->
(n, context, value)``, where ``n = norm1(x)`` of a transformer block and ``extra_options`` carries
``block`` (kind, id), ``block_index`` and ``cond_or_uncond``. They are plain objects over torch tensors.

Official semantics: the appearance net stores ``norm1(x)`` of each of its transformer blocks; the
UNet block at the same position attends with keys/values ``[own norm1(x) ; bank entry]`` (own tokens
first) through its own attention weights — on the conditional branch only. With more than one reference
(DiffPortrait360's front and back) the appearance net runs once per reference and the entries of a block are
concatenated along tokens: keys ``[own ; reference 1 ; reference 2 ; ...]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

BlockKey = tuple[str, int, int]  # (block kind, block id, transformer index inside the block)


def block_key(extra_options: dict) -> BlockKey:
    kind, block_id = extra_options["block"]
    return kind, block_id, extra_options.get("block_index", 0)


def conditional_rows(extra_options: dict, batch: int) -> torch.Tensor:
    """Bool [batch]: rows of the conditional chunk(s), see :func:`chunk_rows`."""
    rows = torch.zeros(batch, dtype=torch.bool)
    for conditional, chunk in chunk_rows(extra_options, batch):
        rows[chunk] = conditional
    return rows


def chunk_rows(extra_options: dict, batch: int) -> list[tuple[bool, slice]]:
    """(conditional?, rows) of each cond/uncond chunk of a batch, in ``cond_or_uncond`` order (ComfyUI stacks
    equal chunks); without that information the whole batch is one conditional chunk."""
    chunks = extra_options.get("cond_or_uncond") or [0]
    if batch % len(chunks):
        raise ValueError(f"batch {batch} does not split into the {len(chunks)} cond/uncond chunks")
    size = batch // len(chunks)
    return [(kind == 0, slice(i * size, (i + 1) * size)) for i, kind in enumerate(chunks)]


def all_rows_equal(tensor: torch.Tensor) -> bool:
    """Whether every index of dim 0 holds the same values (true for one row): then the appearance net's
    run for one of them serves them all."""
    return tensor.shape[0] == 1 or bool((tensor == tensor[:1]).all())


class BankFull(Exception):
    """Raised by ``ReferenceBankWriter`` after the last entry: the rest of the appearance net is dead work."""


class ReferenceBank:
    """Entries of one UNet call: block key -> one tensor [R, tokens, channels] per reference, in reference
    order, R = 1 (shared by all views) or the number of conditional rows; ``strengths`` holds each reference's
    strength in the same order. ``active`` is False on steps without reference."""

    def __init__(self):
        self.entries: dict[BlockKey, list[torch.Tensor]] = {}
        self.strengths: list[float] = []
        self.active = False

    def add_reference(self, strength: float = 1.0) -> None:
        """Closes the pass of one reference (its entries are written): it takes part from now on."""
        self.strengths.append(strength)
        self.active = True

    def segments(self, key: BlockKey) -> list[tuple[int, float]]:
        """(tokens, strength) of each reference's part of the keys at block ``key``, in key order."""
        entries = self.entries.get(key)
        if not entries:
            return []
        return [(entry.shape[1], strength) for entry, strength in zip(entries, self.strengths, strict=True)]


class ReferenceBankWriter:
    """attn1_patch for the appearance net: appends ``norm1(x)`` of every transformer block to the bank (one
    pass = one reference), then stops the network (``BankFull``) once ``expected_entries`` are written."""

    def __init__(self, bank: ReferenceBank, expected_entries: int | None = None):
        self.bank = bank
        self.expected_entries = expected_entries
        self.written = 0

    def __call__(self, n, context, value, extra_options):
        self.bank.entries.setdefault(block_key(extra_options), []).append(n)
        self.written += 1
        if self.expected_entries is not None and self.written >= self.expected_entries:
            raise BankFull
        return n, context, value


class ReferenceBankReader:
    """attn1_patch for the UNet: conditional rows attend over ``[own tokens ; reference 1 ; reference 2 ; ...]``.

    The bank of the current call travels in the transformer options under ``bank_key`` (ComfyUI deep-copies
    patch objects when it clones a model, so a patch must not hold per-call state itself).

    When cond and uncond rows share one batch, the uncond rows get ``[own ; own ; ...]`` (own tokens once
    more per reference): softmax over duplicated keys/values equals attention over the originals exactly, so
    they stay plain self-attention while all rows keep one token count (which needs reference tokens == own
    tokens, guaranteed by the caller). The pack's attn1 replacement then attends them over their own tokens
    only (a block another node replaced attends over all copies, with the same result).
    """

    def __init__(self, bank_key: str):
        self.bank_key = bank_key

    # Never traced: it branches on the transformer options (bank, chunks), and ComfyUI's TorchCompileModel
    # drops torch.compile's guards on those, so a compiled graph would keep its first call's branch.
    @torch.compiler.disable
    def __call__(self, n, context, value, extra_options):
        bank = extra_options.get(self.bank_key)
        entries = bank.entries.get(block_key(extra_options)) if bank is not None and bank.active else None
        if not entries:
            return n, context, value
        rows = conditional_rows(extra_options, n.shape[0]).to(n.device)
        n_cond = int(rows.sum())
        if n_cond == 0:
            return n, context, value
        references = []
        for entry in entries:
            if entry.shape[0] not in (1, n_cond):
                raise ValueError(f"reference bank has {entry.shape[0]} rows for {n_cond} conditional rows")
            references.append(entry.to(dtype=context.dtype, device=context.device).expand(n_cond, -1, -1))
        if n_cond == n.shape[0]:
            return n, torch.cat([context, *references], dim=1), torch.cat([value, *references], dim=1)
        for reference in references:
            if reference.shape[1] != context.shape[1]:
                raise ValueError(
                    f"reference has {reference.shape[1]} tokens, the views {context.shape[1]}: encode the reference "
                    "at the latent size of the views"
                )
        reference = references[0] if len(references) == 1 else torch.cat(references, dim=1)
        extra_context = context.repeat(1, len(references), 1)
        extra_value = value.repeat(1, len(references), 1)
        extra_context[rows] = reference
        extra_value[rows] = reference
        return n, torch.cat([context, extra_context], dim=1), torch.cat([value, extra_value], dim=1)


def reference_logit_bias(own_tokens: int, total_tokens: int, segments: Sequence[tuple[int, float]], dtype,
                         device) -> torch.Tensor:
    """Additive attention-logit bias [total_tokens]: 0 on own tokens, then log(strength) on each reference's
    tokens (``segments``: (tokens, strength) per reference, in key order), 0 on any tokens after them. Softmax
    then weighs every token of reference i by its strength against the own tokens: 1 is the official model,
    0 removes that reference, >1 leans on it harder. Duplicated own tokens (the uncond rows of a mixed batch)
    are unaffected, as any weight on an exact duplicate normalises away."""
    bias = torch.zeros(total_tokens, dtype=dtype, device=device)
    start = own_tokens
    for tokens, strength in segments:
        bias[start:start + tokens] = float("-inf") if strength <= 0 else math.log(strength)
        start += tokens
    return bias
