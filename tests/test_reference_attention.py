"""The reference bank patches on their own (no host): what the UNet's self-attention ends up attending to."""

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
    assert torch.equal(bank.entries[("input", 1, 0)], n) and len(bank.entries) == 2


def test_reader_gives_cond_rows_reference_keys_and_leaves_uncond_attention_unchanged():
    torch.manual_seed(0)
    bank = ReferenceBank()
    reference = torch.randn(1, 5, 8)
    bank.entries[("input", 1, 0)] = reference
    bank.active = True
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
    bank.entries[("input", 1, 0)] = torch.randn(3, 5, 8)
    bank.active = True
    reader = ReferenceBankReader("bank")
    n = torch.randn(3, 5, 8)
    _, context, _ = reader(n, n, n, {**BLOCK, "bank": bank})
    assert torch.equal(context[:, 5:], bank.entries[("input", 1, 0)])
    with pytest.raises(ValueError, match="2 conditional rows"):
        reader(n[:2], n[:2], n[:2], {**BLOCK, "bank": bank})


def test_logit_bias_scales_reference_weight_by_strength():
    torch.manual_seed(1)
    q, own, ref = torch.randn(1, 3, 8), torch.randn(1, 3, 8), torch.randn(1, 2, 8)
    keys = torch.cat([own, ref], dim=1)
    logits = q @ keys.transpose(1, 2) / 8**0.5
    for strength in (0.0, 0.5, 1.0, 2.0):
        bias = reference_logit_bias(3, 5, strength, torch.float32, "cpu")
        weights = torch.softmax(logits + bias, dim=-1)
        unscaled = torch.exp(logits - logits.max(-1, keepdim=True).values)
        expected = torch.cat([unscaled[..., :3], strength * unscaled[..., 3:]], dim=-1)
        assert torch.allclose(weights, expected / expected.sum(-1, keepdim=True), atol=1e-6)
    # duplicated own tokens (uncond rows of a mixed batch) are unaffected by any strength
    doubled = torch.cat([own, own], dim=1)
    bias = reference_logit_bias(3, 6, 0.3, torch.float32, "cpu")
    assert torch.allclose(attend(q, doubled, bias), attend(q, own), atol=1e-6)
