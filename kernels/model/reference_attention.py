"""The appearance reference bank: what the appearance net writes and the UNet's self-attention reads.

Both sides are ComfyUI ``attn1_patch`` callables — ``patch(n, context, value, extra_options) ->
(n, context, value)``, where ``n = norm1(x)`` of a transformer block and ``extra_options`` carries
``block`` (kind, id), ``block_index`` and ``cond_or_uncond``. They are plain objects over torch tensors.

Official semantics: the appearance net stores ``norm1(x)`` of each of its transformer blocks; the
UNet block at the same position attends with keys/values ``[own norm1(x) ; bank entry]`` (own tokens
first) through its own attention weights — on the conditional branch only.
"""

from __future__ import annotations

import math

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
    """Entries of one UNet call: block key -> tensor [R, tokens, channels], R = 1 (shared by all views)
    or the number of conditional rows. ``active`` is False on steps without reference."""

    def __init__(self):
        self.entries: dict[BlockKey, torch.Tensor] = {}
        self.active = False


class ReferenceBankWriter:
    """attn1_patch for the appearance net: records ``norm1(x)`` of every transformer block, then stops
    the network (``BankFull``) once ``expected_entries`` are written."""

    def __init__(self, bank: ReferenceBank, expected_entries: int | None = None):
        self.bank = bank
        self.expected_entries = expected_entries

    def __call__(self, n, context, value, extra_options):
        self.bank.entries[block_key(extra_options)] = n
        if self.expected_entries is not None and len(self.bank.entries) >= self.expected_entries:
            raise BankFull
        return n, context, value


class ReferenceBankReader:
    """attn1_patch for the UNet: conditional rows attend over ``[own tokens ; reference tokens]``.

    The bank of the current call travels in the transformer options under ``bank_key`` (ComfyUI deep-copies
    patch objects when it clones a model, so a patch must not hold per-call state itself).

    When cond and uncond rows share one batch, the uncond rows get ``[own ; own]``: softmax over duplicated
    keys/values equals attention over the originals exactly, so they stay plain self-attention while all
    rows keep one token count (which needs reference tokens == own tokens, guaranteed by the caller). The
    pack's attn1 replacement then attends them over the first half only (a block another node replaced
    attends over both halves, with the same result).
    """

    def __init__(self, bank_key: str):
        self.bank_key = bank_key

    # Never traced: it branches on the transformer options (bank, chunks), and ComfyUI's TorchCompileModel
    # drops torch.compile's guards on those, so a compiled graph would keep its first call's branch.
    @torch.compiler.disable
    def __call__(self, n, context, value, extra_options):
        bank = extra_options.get(self.bank_key)
        entry = bank.entries.get(block_key(extra_options)) if bank is not None and bank.active else None
        if entry is None:
            return n, context, value
        rows = conditional_rows(extra_options, n.shape[0]).to(n.device)
        n_cond = int(rows.sum())
        if n_cond == 0:
            return n, context, value
        if entry.shape[0] not in (1, n_cond):
            raise ValueError(f"reference bank has {entry.shape[0]} rows for {n_cond} conditional rows")
        reference = entry.to(dtype=context.dtype, device=context.device).expand(n_cond, -1, -1)
        if n_cond == n.shape[0]:
            return n, torch.cat([context, reference], dim=1), torch.cat([value, reference], dim=1)
        if reference.shape[1] != context.shape[1]:
            raise ValueError(
                f"reference has {reference.shape[1]} tokens, the views {context.shape[1]}: encode the reference "
                "at the latent size of the views"
            )
        extra_context = context.clone()
        extra_value = value.clone()
        extra_context[rows] = reference
        extra_value[rows] = reference
        return n, torch.cat([context, extra_context], dim=1), torch.cat([value, extra_value], dim=1)


def reference_logit_bias(own_tokens: int, total_tokens: int, strength: float, dtype, device) -> torch.Tensor:
    """Additive attention-logit bias [total_tokens]: 0 on own tokens, log(strength) on the reference tokens
    after them. Softmax then weighs every reference token by ``strength`` against the own tokens: 1 is the
    official model, 0 removes the reference, >1 leans on it harder. Duplicated own tokens (the uncond rows
    of a mixed batch) are unaffected, as any weight on an exact duplicate normalises away."""
    bias = torch.zeros(total_tokens, dtype=dtype, device=device)
    bias[own_tokens:] = float("-inf") if strength <= 0 else math.log(strength)
    return bias
