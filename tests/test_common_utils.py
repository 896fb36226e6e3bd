"""Shared attention / token / mask helpers in efficient_detr_mm.common."""
import torch
import torch.nn.functional as F

from efficient_detr_mm.common import (attend, gather_tokens, merge_heads,
                                      num_valid, scatter_tokens, split_heads,
                                      valid_mask)


def test_attend_matches_torch_sdpa_with_padding():
    torch.manual_seed(0)
    q = torch.randn(2, 4, 5, 8)
    k = torch.randn(2, 4, 7, 8)
    v = torch.randn(2, 4, 7, 8)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 5:] = True
    bias = torch.randn(2, 4, 5, 7)
    ref = F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias.masked_fill(pad[:, None, None], -torch.inf))
    out = attend(q, k, v, key_padding_mask=pad, attn_bias=bias)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # padded keys get no weight: changing their values changes nothing
    v2 = v.clone()
    v2[1, :, 5:] = 1e3
    torch.testing.assert_close(
        attend(q, k, v2, key_padding_mask=pad, attn_bias=bias), out)


def test_heads_roundtrip():
    x = torch.randn(2, 6, 16)
    assert split_heads(x, 4).shape == (2, 4, 6, 4)
    assert torch.equal(merge_heads(split_heads(x, 4)), x)


def test_gather_scatter():
    x = torch.arange(2 * 5 * 3, dtype=torch.float).view(2, 5, 3)
    idx = torch.tensor([[4, 0], [2, 3]])
    g = gather_tokens(x, idx)
    assert torch.equal(g[0, 0], x[0, 4]) and torch.equal(g[1, 1], x[1, 3])
    y = scatter_tokens(x, idx, -g)
    assert torch.equal(y[0, 4], -x[0, 4])
    untouched = torch.ones(2, 5, dtype=torch.bool)
    untouched[0, [4, 0]] = False
    untouched[1, [2, 3]] = False
    assert torch.equal(y[untouched], x[untouched])
    assert torch.equal(gather_tokens(x[..., 0], idx), g[..., 0])


def test_masks():
    m = valid_mask(None, 2, 3, torch.device('cpu'))
    assert m.all() and m.shape == (2, 3)
    pad = torch.tensor([[False, False, True], [False, True, True]])
    assert torch.equal(num_valid(pad, 2, 3, torch.device('cpu')),
                       torch.tensor([2, 1]))
