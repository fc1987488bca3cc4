"""The reference bank patches on their own (no host): what the UNet's self-attention ends up attending to."""

import math

import pytest
import torch
import torch.nn.functional as F

from diffportrait3d.kernels.model.reference_attention import (
    BankFull,
    ReferenceBank,
    ReferenceBankReader,
    ReferenceBankWriter,
    conditional_rows,
    reference_logit_bias,
)

BLOCK = {"block": ("input", 1), "block_index": 0}


def attend(n, context, bias=None):
    return F.scaled_dot_product_attention(n, context, context, attn_mask=bias)


def test_conditional_rows_follow_comfy_chunk_order():
    assert conditional_rows({"cond_or_uncond": [1, 0]}, 6).tolist() == [False] * 3 + [True] * 3
    assert conditional_rows({"cond_or_uncond": [0]}, 2).tolist() == [True, True]
    assert conditional_rows({}, 2).tolist() == [True, True]
    with pytest.raises(ValueError, match="does not split"):
        conditional_rows({"cond_or_uncond": [0, 1]}, 3)


def test_writer_records_norm1_per_block_and_stops_after_the_last():
    bank = ReferenceBank()
    writer = ReferenceBankWriter(bank, expected_entries=2)
    n = torch.randn(1, 4, 8)
    assert writer(n, n, n, BLOCK)[0] is n
    with pytest.raises(BankFull):
        writer(2 * n, n, n, {"block": ("output", 3), "block_index": 0})
    assert torch.equal(bank.entries[("input", 1, 0)][0], n) and len(bank.entries) == 2


def test_a_second_pass_appends_its_entries_after_the_first():
    bank = ReferenceBank()
    first, second = torch.randn(1, 4, 8), torch.randn(1, 4, 8)
    for n, strength in ((first, 1.0), (second, 0.5)):
        with pytest.raises(BankFull):
            ReferenceBankWriter(bank, expected_entries=1)(n, n, n, BLOCK)
        bank.add_reference(strength)
    assert bank.active and bank.strengths == [1.0, 0.5]
    assert [e is n for e, n in zip(bank.entries[("input", 1, 0)], (first, second), strict=True)] == [True, True]
    assert bank.segments(("input", 1, 0)) == [(4, 1.0), (4, 0.5)] and bank.segments(("middle", 0, 0)) == []


def test_reader_gives_cond_rows_reference_keys_and_leaves_uncond_attention_unchanged():
    torch.manual_seed(0)
    bank = ReferenceBank()
    reference = torch.randn(1, 5, 8)
    bank.entries[("input", 1, 0)] = [reference]
    bank.add_reference()
    reader = ReferenceBankReader("bank")
    n = torch.randn(4, 5, 8)  # rows 0-1 uncond, rows 2-3 cond
    options = {**BLOCK, "cond_or_uncond": [1, 0], "bank": bank}
    _, context, value = reader(n, n, n, options)
    assert torch.equal(context, value) and context.shape == (4, 10, 8)
    assert torch.equal(context[2:], torch.cat([n[2:], reference.expand(2, -1, -1)], dim=1))  # own first
    # uncond rows see their own tokens twice: attention is unchanged
    assert torch.allclose(attend(n[:2], context[:2]), attend(n[:2], n[:2]), atol=1e-6)
    # without a bank in the options (another model's call) or when inactive, nothing changes
    assert reader(n, n, n, {**BLOCK, "cond_or_uncond": [1, 0]})[1] is n
    bank.active = False
    assert reader(n, n, n, options)[1] is n


def test_reader_uses_per_view_entries_and_rejects_mismatched_banks():
    bank = ReferenceBank()
    bank.entries[("input", 1, 0)] = [torch.randn(3, 5, 8)]
    bank.add_reference()
    reader = ReferenceBankReader("bank")
    n = torch.randn(3, 5, 8)
    _, context, _ = reader(n, n, n, {**BLOCK, "bank": bank})
    assert torch.equal(context[:, 5:], bank.entries[("input", 1, 0)][0])
    with pytest.raises(ValueError, match="2 conditional rows"):
        reader(n[:2], n[:2], n[:2], {**BLOCK, "bank": bank})


def test_logit_bias_scales_reference_weight_by_strength():
    torch.manual_seed(1)
    q, own, ref = torch.randn(1, 3, 8), torch.randn(1, 3, 8), torch.randn(1, 2, 8)
    keys = torch.cat([own, ref], dim=1)
    logits = q @ keys.transpose(1, 2) / 8**0.5
    for strength in (0.0, 0.5, 1.0, 2.0):
        bias = reference_logit_bias(3, 5, [(2, strength)], torch.float32, "cpu")
        weights = torch.softmax(logits + bias, dim=-1)
        unscaled = torch.exp(logits - logits.max(-1, keepdim=True).values)
        expected = torch.cat([unscaled[..., :3], strength * unscaled[..., 3:]], dim=-1)
        assert torch.allclose(weights, expected / expected.sum(-1, keepdim=True), atol=1e-6)
    # duplicated own tokens (uncond rows of a mixed batch) are unaffected by any strength
    doubled = torch.cat([own, own], dim=1)
    bias = reference_logit_bias(3, 6, [(3, 0.3)], torch.float32, "cpu")
    assert torch.allclose(attend(q, doubled, bias), attend(q, own), atol=1e-6)


def two_reference_bank(first, second, strengths=(1.0, 1.0)):
    bank = ReferenceBank()
    for entry, strength in zip((first, second), strengths, strict=True):
        bank.entries.setdefault(BLOCK_KEY, []).append(entry)
        bank.add_reference(strength)
    return bank


BLOCK_KEY = ("input", 1, 0)


@pytest.mark.parametrize("strengths", [(1.0, 1.0), (0.5, 2.0), (1.0, 0.0)])
def test_two_references_attend_like_a_softmax_over_own_and_both_reference_keys(strengths):
    """Hand-written attention of one head: softmax over the logits of [own ; ref1 ; ref2] keys, where reference
    i's exponentials are weighted by its strength, against the reader's keys + the bank's logit bias."""
    torch.manual_seed(2)
    tokens, channels = 3, 4
    q = torch.randn(2, tokens, channels, dtype=torch.float64)  # one query per own token (q = n here)
    first, second = (torch.randn(1, tokens, channels, dtype=torch.float64) for _ in range(2))
    bank = two_reference_bank(first, second, strengths)
    _, keys, values = ReferenceBankReader("bank")(q, q, q, {**BLOCK, "bank": bank})
    bias = reference_logit_bias(tokens, keys.shape[1], bank.segments(BLOCK_KEY), q.dtype, "cpu")
    out = attend(q, keys, bias)
    for row in range(2):
        own_and_refs = [q[row], first[0], second[0]]
        weights = [1.0, *strengths]
        for i in range(tokens):
            numerators = [w * math.exp(float(q[row, i] @ k[j]) / math.sqrt(channels))
                          for w, k in zip(weights, own_and_refs, strict=True) for j in range(tokens)]
            values_list = [k[j] for k in own_and_refs for j in range(tokens)]
            expected = sum(a * v for a, v in zip(numerators, values_list, strict=True)) / sum(numerators)
            assert torch.allclose(out[row, i], expected, atol=1e-12)


def test_two_references_in_a_mixed_batch_leave_uncond_rows_at_plain_self_attention():
    torch.manual_seed(3)
    first, second = torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    bank = two_reference_bank(first, second, (0.5, 2.0))
    n = torch.randn(4, 5, 8)  # rows 0-1 cond, rows 2-3 uncond
    _, keys, values = ReferenceBankReader("bank")(n, n, n, {**BLOCK, "cond_or_uncond": [0, 1], "bank": bank})
    assert keys.shape == (4, 15, 8) and torch.equal(keys, values)
    assert torch.equal(keys[:2], torch.cat([n[:2], first.expand(2, -1, -1), second.expand(2, -1, -1)], dim=1))
    assert torch.equal(keys[2:], torch.cat([n[2:]] * 3, dim=1))
    bias = reference_logit_bias(5, 15, bank.segments(BLOCK_KEY), torch.float32, "cpu")
    assert torch.allclose(attend(n[2:], keys[2:], bias), attend(n[2:], n[2:]), atol=1e-6)
    # a reference at another size than the views cannot share a batch with uncond rows
    bank.entries[BLOCK_KEY][1] = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="encode the reference at the latent size of the views"):
        ReferenceBankReader("bank")(n, n, n, {**BLOCK, "cond_or_uncond": [0, 1], "bank": bank})
