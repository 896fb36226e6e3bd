"""KDAttention and the shared multi-scale bilinear sampling core."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmcv.ops import MultiScaleDeformableAttention
from mmcv.ops.multi_scale_deform_attn import \
    multi_scale_deformable_attn_pytorch
from mmdet.registry import MODELS

from efficient_detr_mm.common import (deform_sampling_locations,
                                      multi_scale_bilinear_sample)
from efficient_detr_mm.lite_detr import KDAttention

C, HEADS, LEVELS, POINTS = 32, 4, 3, 2
SHAPES = torch.tensor([[6, 8], [3, 4], [2, 2]])
N = int(SHAPES.prod(-1).sum())
START = torch.cat([SHAPES.new_zeros(1), SHAPES.prod(-1).cumsum(0)[:-1]])


def _inputs(bs=2, nq=5, ref_dim=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(bs, nq, C, generator=g)
    pos = torch.randn(bs, nq, C, generator=g)
    value = torch.randn(bs, N, C, generator=g)
    ref = torch.rand(bs, nq, LEVELS, ref_dim, generator=g)
    if ref_dim == 4:
        ref[..., 2:] = ref[..., 2:] * 0.5 + 0.05
    return query, pos, value, ref


def _kda(**kw):
    torch.manual_seed(0)
    m = KDAttention(
        embed_dims=C,
        num_heads=HEADS,
        num_levels=LEVELS,
        num_points=POINTS,
        dropout=0.0,
        batch_first=True,
        **kw)
    # random offsets so that samples fall between pixels and outside maps
    with torch.no_grad():
        m.sampling_offsets.weight.normal_(0, 0.3)
        m.query_proj.bias.normal_(0, 0.1)
        m.value_proj.bias.normal_(0, 0.1)
    return m.eval()


def _call(m, query, pos, value, ref, mask=None):
    return m(
        query=query,
        value=value,
        query_pos=pos,
        key_padding_mask=mask,
        reference_points=ref,
        spatial_shapes=SHAPES,
        level_start_index=START)


def test_registered_and_msda_subclass():
    m = MODELS.build(dict(type='KDAttention', embed_dims=C, num_heads=HEADS))
    assert isinstance(m, MultiScaleDeformableAttention)
    assert not hasattr(m, 'attention_weights')
    assert m.key_proj is None and m.query_proj.weight.shape == (C, C)
    names = {n for n, _ in m.named_parameters()}
    assert names == {
        f'{p}.{w}'
        for p in ('sampling_offsets', 'value_proj', 'query_proj',
                  'output_proj') for w in ('weight', 'bias')
    }


def test_init_keeps_offset_grid_after_xavier_pass():
    ref = MultiScaleDeformableAttention(C, HEADS, LEVELS, POINTS)
    m = KDAttention(C, HEADS, LEVELS, POINTS)
    for p in m.parameters():  # mmdet's blanket pass, then MSDA re-init
        if p.dim() > 1:
            torch.nn.init.xavier_uniform_(p)
    m.init_weights()
    assert torch.all(m.sampling_offsets.weight == 0)
    assert torch.equal(m.sampling_offsets.bias, ref.sampling_offsets.bias)
    assert torch.all(m.query_proj.bias == 0)
    # same_loc: one offset set for all levels, same directions
    s = KDAttention(C, HEADS, LEVELS, POINTS, same_loc=True)
    assert s.sampling_offsets.out_features == HEADS * POINTS * 2
    assert torch.equal(
        s.sampling_offsets.bias.view(HEADS, POINTS, 2),
        ref.sampling_offsets.bias.view(HEADS, LEVELS, POINTS, 2)[:, 0])


def test_sampling_core_matches_mmcv_weighted_sum():
    query, _, value, ref = _inputs(nq=7)
    g = torch.Generator().manual_seed(3)
    value = value.view(2, N, HEADS, C // HEADS)
    offsets = torch.randn(2, 7, HEADS, LEVELS, POINTS, 2, generator=g) * 2
    loc = deform_sampling_locations(ref, offsets, SHAPES)
    weights = torch.rand(2, 7, HEADS, LEVELS, POINTS, generator=g)
    expected = multi_scale_deformable_attn_pytorch(value, SHAPES, loc,
                                                   weights)
    samples = multi_scale_bilinear_sample(value, SHAPES, loc)
    assert samples.shape == (2, HEADS, C // HEADS, 7, LEVELS, POINTS)
    out = (samples * weights.permute(0, 2, 1, 3, 4)[:, :, None]).sum(
        (-1, -2))
    out = out.flatten(1, 2).transpose(1, 2)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_sampling_core_hand_case():
    # one 2x2 map, one channel: the centre samples the mean of the pixels,
    # a pixel centre samples the pixel, beyond the border gives zero
    value = torch.tensor([1., 2., 3., 4.]).view(1, 4, 1, 1)
    loc = torch.tensor([[0.5, 0.5], [0.25, 0.75], [1.5, 0.5]]).view(
        1, 3, 1, 1, 1, 2)
    s = multi_scale_bilinear_sample(value, [(2, 2)], loc).flatten()
    torch.testing.assert_close(s, torch.tensor([2.5, 3.0, 0.0]))


def test_zero_query_projection_equals_msda_init_state():
    kda = _kda()
    with torch.no_grad():
        kda.query_proj.weight.zero_()
        kda.query_proj.bias.zero_()
    msda = MultiScaleDeformableAttention(
        C, HEADS, LEVELS, POINTS, dropout=0.0, batch_first=True).eval()
    assert torch.all(msda.attention_weights.weight == 0)  # its init state
    msda.load_state_dict(
        {k: v
         for k, v in kda.state_dict().items() if 'query_proj' not in k},
        strict=False)
    for ref_dim in (2, 4):
        query, pos, value, ref = _inputs(ref_dim=ref_dim)
        with torch.no_grad():
            a = _call(kda, query, pos, value, ref)
            b = _call(msda, query, pos, value, ref)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(a, query)  # the attention did something


def _separate_sampling_reference(m, query, pos, value, ref, mask=None):
    """KDA written the official way: keys and values sampled separately,
    attention in an explicit loop-free einsum."""
    q = query + pos
    bs, nq, _ = q.shape
    hd = C // HEADS
    v = m.value_proj(value)
    k = m.key_proj(value) if m.proj_key else v
    if mask is not None:
        v = v.masked_fill(mask[..., None], 0)
        k = k.masked_fill(mask[..., None], 0)
    off = m.sampling_offsets(q).view(bs, nq, HEADS, -1, POINTS, 2)
    off = off.expand(-1, -1, -1, LEVELS, -1, -1)
    loc = deform_sampling_locations(ref, off, SHAPES)
    vs = multi_scale_bilinear_sample(v.view(bs, N, HEADS, hd), SHAPES, loc)
    ks = multi_scale_bilinear_sample(k.view(bs, N, HEADS, hd), SHAPES, loc)
    qp = m.query_proj(q).view(bs, nq, HEADS, hd)
    logits = torch.einsum('bqhd,bhdqlp->bhqlp', qp, ks).flatten(-2)
    w = F.softmax(logits / math.sqrt(hd), -1)
    out = torch.einsum('bhqs,bhdqs->bqhd', w, vs.flatten(-2)).flatten(2)
    return m.output_proj(out) + query


@pytest.mark.parametrize('proj_key,same_loc,ref_dim',
                         [(False, False, 2), (False, False, 4),
                          (True, False, 2), (False, True, 4)])
def test_sample_once_equals_separate_sampling(proj_key, same_loc, ref_dim):
    m = _kda(proj_key=proj_key, same_loc=same_loc)
    if proj_key:
        with torch.no_grad():
            m.key_proj.bias.normal_(0, 0.1)
    query, pos, value, ref = _inputs(ref_dim=ref_dim)
    mask = torch.zeros(2, N, dtype=torch.bool)
    mask[1, :10] = True
    with torch.no_grad():
        for msk in (None, mask):
            a = _call(m, query, pos, value, ref, msk)
            b = _separate_sampling_reference(m, query, pos, value, ref, msk)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_weights_depend_on_keys():
    # the weights come from the sampled keys: the output is not affine in
    # the value input (it is with a zero query projection, uniform weights)
    m = _kda()
    query, pos, value, _ = _inputs()
    ref = torch.full((2, 5, LEVELS, 2), 0.5)
    v2, v3 = value.clone(), value.clone()
    v2[:, :48] *= 3
    v3[:, :48] *= 2

    def diffs():
        with torch.no_grad():
            a, b, c = (_call(m, query, pos, v, ref) for v in (value, v2, v3))
        return (b - a) / 2, c - a

    half, step = diffs()
    assert (half - step).abs().max() > 1e-3
    with torch.no_grad():
        m.query_proj.weight.zero_()
        m.query_proj.bias.zero_()
    half, step = diffs()
    torch.testing.assert_close(half, step, rtol=1e-4, atol=1e-5)


def test_padding_mask_and_none_mask():
    m = _kda()
    query, pos, value, ref = _inputs()
    none_mask = _call(m, query, pos, value, ref, None)
    all_valid = _call(m, query, pos, value, ref,
                      torch.zeros(2, N, dtype=torch.bool))
    torch.testing.assert_close(none_mask, all_valid)
    # padded values do not leak: changing them changes nothing
    mask = torch.zeros(2, N, dtype=torch.bool)
    mask[0, 20:48] = True
    v2 = value.clone()
    v2[0, 20:48] = 100 * torch.randn(28, C)
    a = _call(m, query, pos, value, ref, mask)
    b = _call(m, query, pos, v2, ref, mask)
    torch.testing.assert_close(a, b)


def test_seq_first_layout():
    m = _kda()
    query, pos, value, ref = _inputs()
    a = _call(m, query, pos, value, ref)
    m.batch_first = False
    b = m(
        query=query.transpose(0, 1),
        value=value.transpose(0, 1),
        query_pos=pos.transpose(0, 1),
        reference_points=ref,
        spatial_shapes=SHAPES,
        level_start_index=START)
    torch.testing.assert_close(a, b.transpose(0, 1))


def test_gradients_reach_offsets_and_query_projection():
    m = KDAttention(C, HEADS, LEVELS, POINTS, batch_first=True)  # true init
    query, pos, value, ref = _inputs()
    _call(m, query, pos, value, ref).square().sum().backward()
    for name in ('sampling_offsets', 'query_proj', 'value_proj',
                 'output_proj'):
        grad = getattr(m, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_bad_config_fails_at_build():
    with pytest.raises(ValueError, match='value_proj_ratio'):
        KDAttention(C, HEADS, value_proj_ratio=2.0)


def test_flop_count_hand_computed():
    m = KDAttention(
        embed_dims=16, num_heads=2, num_levels=2, num_points=3,
        batch_first=True)
    bs, nq, nv = 2, 5, 7
    query, value = torch.zeros(bs, nq, 16), torch.zeros(bs, nv, 16)
    # value_proj 2*7*16*16 = 3584; offsets 2*5*16*(2*2*3*2=24) = 3840;
    # query_proj + output_proj 2 * 2*5*16*16 = 5120;
    # samples per query: 2 heads x 8 ch x 6 points = 96 channel-samples,
    # x 10 queries = 960: bilinear 4*960 = 3840, key products 960,
    # weighted sum 960
    assert m.flop_count((query, ), dict(value=value), None) == (
        3584 + 3840 + 5120 + 3840 + 960 + 960)
    # proj_key: a key projection and a second sampled map
    mk = KDAttention(
        embed_dims=16,
        num_heads=2,
        num_levels=2,
        num_points=3,
        batch_first=True,
        proj_key=True)
    assert mk.flop_count((query, None, value), {}, None) == (
        2 * 3584 + 3840 + 5120 + 2 * 3840 + 960 + 960)
    # value=None: self-attention over the queries
    assert m.flop_count((), dict(query=query), None) == (
        2 * 5 * 16 * 16 + 3840 + 5120 + 3840 + 960 + 960)


def test_locations_keep_reference_precision():
    _, _, _, ref = _inputs()
    offsets = torch.randn(2, 5, HEADS, LEVELS, POINTS, 2)
    loc32 = deform_sampling_locations(ref, offsets, SHAPES)
    loc16 = deform_sampling_locations(ref, offsets.bfloat16(), SHAPES)
    assert loc16.dtype == torch.float32
    # only the offsets' own rounding, not a bf16 division / addition
    torch.testing.assert_close(
        loc16,
        deform_sampling_locations(ref,
                                  offsets.bfloat16().float(), SHAPES))
    assert (loc16 - loc32).abs().max() < 0.01
    with pytest.raises(ValueError, match='2 or 4'):
        deform_sampling_locations(ref[..., :1], offsets, SHAPES)


def test_with_cp_same_output_and_gradients():
    query, pos, value, ref = _inputs()
    grads = []
    for with_cp in (False, True):
        m = _kda(with_cp=with_cp).train()
        v = value.clone().requires_grad_()
        out = _call(m, query, pos, v, ref)
        out.square().sum().backward()
        grads.append((out.detach(), v.grad, m.sampling_offsets.weight.grad,
                      m.query_proj.weight.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
