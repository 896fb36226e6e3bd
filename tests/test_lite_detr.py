"""InterleavedLiteEncoder, LiteEncoderLayer, LiteDINO, LiteDeformableDETR."""
import copy

import pytest
import torch
from helpers import det_samples, load_config
from mmcv.ops import MultiScaleDeformableAttention
from mmdet.models.layers.transformer import DeformableDetrTransformerEncoder
from mmdet.registry import MODELS

from efficient_detr_mm.lite_detr import (InterleavedLiteEncoder, KDAttention,
                                         LiteEncoderLayer)

C = 32
SHAPES = torch.tensor([[8, 10], [4, 5], [2, 3], [1, 2]])
START = torch.cat([SHAPES.new_zeros(1), SHAPES.prod(-1).cumsum(0)[:-1]])
N = int(SHAPES.prod(-1).sum())


def _layer_cfg(attn='KDAttention', ffn=64):
    attn_cfg = dict(embed_dims=C, num_heads=4, num_levels=4, dropout=0.0)
    if attn is not None:
        attn_cfg['type'] = attn
    return dict(
        self_attn_cfg=attn_cfg,
        ffn_cfg=dict(embed_dims=C, feedforward_channels=ffn, ffn_drop=0.0))


def _encoder(num_layers=6, num_blocks=3, num_high_levels=3, attn='KDAttention',
             low_ffn_channels=16, **kw):
    torch.manual_seed(0)
    enc = InterleavedLiteEncoder(
        num_layers=num_layers,
        layer_cfg=_layer_cfg(attn),
        num_blocks=num_blocks,
        num_high_levels=num_high_levels,
        low_ffn_channels=low_ffn_channels,
        **kw)
    _randomise(enc)
    return enc.eval()


def _randomise(module):
    """Random weights everywhere (offsets too, so samples fall off-grid)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 0.1 if 'sampling_offsets' in name else 0.3
            p.copy_(torch.randn(p.shape, generator=g) * scale +
                    (1.0 if name.endswith('norms.0.weight') else 0.0))


def _padded_inputs(bs=2, pad=True, seed=0):
    """Flattened multi-scale features; image 1 is padded (valid 3/4 x 1/2
    of every level) when ``pad``."""
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(bs, N, C, generator=g)
    pos = torch.randn(bs, N, C, generator=g)
    masks, ratios = [], []
    for b in range(bs):
        level_masks, level_ratios = [], []
        for h, w in SHAPES.tolist():
            m = torch.zeros(h, w, dtype=torch.bool)
            if pad and b == 1:
                vh, vw = max(1, (3 * h) // 4), max(1, w // 2)
                m[vh:] = True
                m[:, vw:] = True
                level_ratios.append([vw / w, vh / h])
            else:
                level_ratios.append([1.0, 1.0])
            level_masks.append(m.flatten())
        masks.append(torch.cat(level_masks))
        ratios.append(level_ratios)
    return query, pos, torch.stack(masks), torch.tensor(ratios)


def _run(enc, query, pos, mask, ratios):
    return enc(
        query=query,
        query_pos=pos,
        key_padding_mask=mask,
        spatial_shapes=SHAPES,
        level_start_index=START,
        valid_ratios=ratios)


def test_degenerate_setting_equals_mmdet_encoder():
    # all levels high, one block, no small FFN, mmcv MSDA
    torch.manual_seed(0)
    ref = DeformableDetrTransformerEncoder(
        num_layers=3, layer_cfg=_layer_cfg(attn=None)).eval()
    _randomise(ref)
    ours = InterleavedLiteEncoder(
        num_layers=3,
        layer_cfg=_layer_cfg(attn=None),
        num_blocks=1,
        num_high_levels=4,
        low_ffn_channels=None).eval()
    assert ours.layer_types == 'HHA'
    assert type(ours.layers[0].self_attn) is MultiScaleDeformableAttention
    ours.load_state_dict(ref.state_dict(), strict=True)
    query, pos, mask, ratios = _padded_inputs()
    with torch.no_grad():
        a = _run(ref, query, pos, mask, ratios)
        b = _run(ours, query, pos, mask, ratios)
    assert (a - b).abs().max() < 1e-5


@pytest.mark.parametrize('layers,blocks,pattern', [(6, 3, 'HAHAHA'),
                                                   (6, 2, 'HHAHHA'),
                                                   (6, 1, 'HHHHHA'),
                                                   (4, 2, 'HAHA')])
def test_layer_type_pattern(layers, blocks, pattern):
    enc = _encoder(num_layers=layers, num_blocks=blocks)
    assert enc.layer_types == pattern
    # small FFN only where all tokens are updated
    assert [m.low_ffn is not None for m in enc.layers] == \
        [t == 'A' for t in pattern]
    # behaviour: an H layer has the high-level tokens as queries (levels
    # 1-3), an A layer all tokens; both read all tokens as values
    seen = []

    def hook(module, args, kwargs):
        seen.append((kwargs['query'].shape[1], kwargs['value'].shape[1]))

    for m in enc.layers:
        m.register_forward_pre_hook(hook, with_kwargs=True)
    with torch.no_grad():
        _run(enc, *_padded_inputs())
    split = int(START[1])
    assert seen == [(N - split if t == 'H' else N, N) for t in pattern]


def test_high_level_split_h2l2():
    enc = _encoder(num_high_levels=2)
    seen = []
    enc.layers[0].register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw['query'].shape[1]), with_kwargs=True)
    with torch.no_grad():
        _run(enc, *_padded_inputs())
    assert seen == [N - int(START[2])]


def test_h_layer_leaves_low_level_tokens_unchanged():
    enc = _encoder(num_layers=2, num_blocks=1)  # HA
    query, pos, mask, ratios = _padded_inputs()
    values = []
    enc.layers[1].register_forward_pre_hook(
        lambda m, a, kw: values.append(kw['value']), with_kwargs=True)
    with torch.no_grad():
        out = _run(enc, query, pos, mask, ratios)
    split = int(START[1])
    after_h = values[0]
    assert torch.equal(after_h[:, :split], query[:, :split])
    assert not torch.allclose(after_h[:, split:], query[:, split:])
    assert not torch.allclose(out[:, :split], query[:, :split])


def _reference_schedule(enc, query, pos, mask, ratios):
    """The released schedule written out with explicit index sets of the
    levels and the layers' sub-modules (attention, FFNs, norms)."""
    ref = DeformableDetrTransformerEncoder.get_encoder_reference_points(
        SHAPES, ratios, device='cpu')
    level_of = torch.repeat_interleave(torch.arange(4), SHAPES.prod(-1))
    high = torch.nonzero(level_of >= 4 - enc.num_high_levels).flatten()
    low = torch.nonzero(level_of < 4 - enc.num_high_levels).flatten()
    x = query.clone()
    for i, layer in enumerate(enc.layers):
        idx = torch.arange(N) if (i + 1) % (6 // enc.num_blocks) == 0 \
            else high
        q = layer.self_attn(
            query=x[:, idx],
            value=x,
            query_pos=pos[:, idx],
            key_padding_mask=mask,
            reference_points=ref[:, idx],
            spatial_shapes=SHAPES,
            level_start_index=START)
        q = layer.norms[0](q)
        new = layer.norms[1](layer.ffn(q))
        if layer.low_ffn is not None:
            is_low = (level_of[idx] < 4 - enc.num_high_levels)
            small = layer.norms[2](layer.low_ffn(q))
            new = torch.where(is_low[None, :, None], small, new)
        x = x.clone()
        x[:, idx] = new
    return x, low


@pytest.mark.parametrize('blocks,high', [(3, 3), (1, 3), (3, 2)])
def test_schedule_matches_explicit_reference(blocks, high):
    enc = _encoder(num_blocks=blocks, num_high_levels=high)
    query, pos, mask, ratios = _padded_inputs()
    with torch.no_grad():
        out = _run(enc, query, pos, mask, ratios)
        expected, _ = _reference_schedule(enc, query, pos, mask, ratios)
    assert out.shape == query.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_low_level_queries_only_variant():
    enc = _encoder(num_layers=2, num_blocks=1, low_level_queries_only=True)
    query, pos, mask, ratios = _padded_inputs()
    values = []
    enc.layers[1].register_forward_pre_hook(
        lambda m, a, kw: values.append(
            (kw['query'].shape[1], kw['value'])), with_kwargs=True)
    with torch.no_grad():
        out = _run(enc, query, pos, mask, ratios)
    split = int(START[1])
    nq, after_h = values[0]
    assert nq == split  # the A layer queries only the low-level tokens
    # ... and leaves the high-level tokens as the H layer made them
    assert torch.equal(out[:, split:], after_h[:, split:])
    assert not torch.allclose(out[:, :split], query[:, :split])


def test_padded_batch_and_none_mask():
    enc = _encoder()
    query, pos, mask, ratios = _padded_inputs(pad=False)
    with torch.no_grad():
        a = _run(enc, query, pos, None, ratios)
        b = _run(enc, query, pos, mask, ratios)  # all False
    torch.testing.assert_close(a, b)
    # padded batch: the unpadded image gives what it gives alone, and the
    # padded image's valid tokens do not see its padded tokens
    query, pos, mask, ratios = _padded_inputs(pad=True)
    with torch.no_grad():
        batch = _run(enc, query, pos, mask, ratios)
        alone = _run(enc, query[:1], pos[:1], None, ratios[:1])
        q2 = query.clone()
        q2[1][mask[1]] = 50 * torch.randn(int(mask[1].sum()), C)
        batch2 = _run(enc, q2, pos, mask, ratios)
    torch.testing.assert_close(batch[:1], alone, rtol=1e-5, atol=1e-5)
    valid = ~mask[1]
    torch.testing.assert_close(batch2[1][valid], batch[1][valid])
    assert torch.isfinite(batch).all()


def test_gradients_reach_offsets_and_query_projection():
    torch.manual_seed(0)
    enc = InterleavedLiteEncoder(
        num_layers=6, layer_cfg=_layer_cfg(), num_blocks=3)
    for m in enc.modules():  # true init: offsets' weights are zero
        if isinstance(m, MultiScaleDeformableAttention):
            m.init_weights()
    query, pos, mask, ratios = _padded_inputs()
    _run(enc, query, pos, mask, ratios).square().sum().backward()
    for i, layer in enumerate(enc.layers):
        for name in ('sampling_offsets', 'query_proj'):
            g = getattr(layer.self_attn, name).weight.grad
            assert g is not None and g.abs().sum() > 0, (i, name)
        if layer.low_ffn is not None:
            assert layer.low_ffn.layers[0][0].weight.grad.abs().sum() > 0


def test_low_ffn_shapes_and_msda_option():
    enc = _encoder(attn=None, low_ffn_channels=16)
    assert type(enc.layers[1].self_attn) is MultiScaleDeformableAttention
    low = enc.layers[1].low_ffn.layers
    assert low[0][0].out_features == 16 and low[1].in_features == 16
    assert len(enc.layers[1].norms) == 3 and len(enc.layers[0].norms) == 2
    with torch.no_grad():
        out = _run(enc, *_padded_inputs())
    assert out.shape == (2, N, C)
    assert _encoder(low_ffn_channels=None).layers[1].low_ffn is None


@pytest.mark.parametrize('kwargs,match', [
    (dict(num_layers=6, num_blocks=4), 'divisible by num_blocks'),
    (dict(num_high_levels=5), r'num_high_levels must be in \[1, 4\]'),
    (dict(num_high_levels=0), 'num_high_levels'),
    (dict(num_blocks=0), 'num_blocks'),
    (dict(low_ffn_channels=0), 'low_ffn_channels'),
])
def test_bad_encoder_config_fails_at_build(kwargs, match):
    cfg = dict(num_layers=6, layer_cfg=_layer_cfg(), num_blocks=3)
    cfg.update(kwargs)
    with pytest.raises(ValueError, match=match):
        InterleavedLiteEncoder(**cfg)


def test_wrong_layer_type_fails_at_build():
    cfg = _layer_cfg()
    cfg['type'] = 'EffDeformableDetrTransformerEncoderLayer'
    with pytest.raises(ValueError, match='LiteEncoderLayer'):
        InterleavedLiteEncoder(num_layers=2, layer_cfg=cfg, num_blocks=1)


def test_registered():
    for name in ('KDAttention', 'InterleavedLiteEncoder', 'LiteEncoderLayer',
                 'LiteDINO', 'LiteDeformableDETR'):
        assert MODELS.get(name) is not None, name
    assert issubclass(MODELS.get('LiteEncoderLayer'), LiteEncoderLayer)


# --------------------------------------------------------------- detectors
DETECTORS = [
    'lite_detr/lite-dino-h3l1-3blk_r18-tiny_1xb4-12e_shapes.py',
    'lite_detr/lite-deformable-detr-h3l1-3blk_r18-tiny_1xb4-12e_shapes.py',
]


@pytest.mark.parametrize('cfg_path', DETECTORS)
def test_detector_kda_everywhere_and_init(cfg_path):
    cfg = load_config(cfg_path).model
    model = MODELS.build(copy.deepcopy(cfg))
    model.init_weights()
    assert isinstance(model.encoder, InterleavedLiteEncoder)
    assert model.encoder.layer_types == 'HAHAHA'
    attns = [m.self_attn for m in model.encoder.layers] + \
        [m.cross_attn for m in model.decoder.layers]
    assert all(type(a) is KDAttention for a in attns)
    for a in attns:  # mmdet's Xavier pass did not destroy the offset grid
        assert torch.all(a.sampling_offsets.weight == 0)
        assert a.sampling_offsets.bias.abs().max() > 1
    # decoder_key_aware=False keeps mmcv's MSDA in the decoder
    cfg.decoder_key_aware = False
    cfg.decoder.layer_cfg.cross_attn_cfg.pop('type')
    model = MODELS.build(cfg)
    assert all(
        type(m.cross_attn) is MultiScaleDeformableAttention
        for m in model.decoder.layers)


def test_decoder_key_aware_conflict_fails_at_build():
    cfg = load_config(DETECTORS[0]).model
    cfg.decoder.layer_cfg.cross_attn_cfg.type = 'MultiScaleDeformableAttention'
    with pytest.raises(ValueError, match='decoder_key_aware'):
        MODELS.build(cfg)


@pytest.mark.parametrize('cfg_path', DETECTORS)
def test_detector_loss_and_predict_padded(cfg_path):
    torch.manual_seed(0)
    model = MODELS.build(load_config(cfg_path).model)
    model.init_weights()
    inputs = torch.rand(2, 3, 96, 128)
    samples = det_samples([(96, 128), (80, 100)],
                          boxes=[[[10, 12, 60, 70]], [[5, 5, 40, 30]]],
                          labels=[[2], [0]])
    model.train()
    losses = model.loss(inputs, copy.deepcopy(samples))
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    grad = model.encoder.layers[0].self_attn.query_proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        preds = model.predict(inputs, copy.deepcopy(samples))
    assert preds[1].pred_instances.bboxes.shape == (100, 4)


# ------------------------------------------------------- FLOPs, precision
def test_encoder_flops_through_analysis_toolkit():
    from efficient_detr_mm.analysis import count_flops
    enc = _encoder()  # HAHAHA, H3L1, KDA, FFN 64, low FFN 16
    query, pos, mask, ratios = _padded_inputs()
    res = count_flops(
        enc,
        query=query,
        query_pos=pos,
        key_padding_mask=mask,
        spatial_shapes=SHAPES,
        level_start_index=START,
        valid_ratios=ratios)
    assert res.override_calls['KDAttention'] == 6
    bs, split, samples = 2, int(START[1]), 4 * 4
    n_high = N - split

    def kda(nq):  # per call, over the batch: value / offsets / query /
        # output projections, 4-MAC bilinear sampling, key products, sum
        return bs * (N * C * C + nq * C * (4 * 4 * 4 * 2) + 2 * nq * C * C +
                     (4 + 2) * nq * C * samples)

    assert res.by_op['override:KDAttention'] == 3 * kda(n_high) + 3 * kda(N)
    # FFNs: H layers high tokens (64 hidden); A layers high tokens through
    # the normal FFN and low tokens through the 16-hidden one
    ffn = 3 * bs * n_high * 2 * C * 64 + 3 * bs * (
        n_high * 2 * C * 64 + split * 2 * C * 16)
    assert res.by_op['linear'] == ffn


def test_kda_under_autocast_bf16():
    enc = _encoder()
    query, pos, mask, ratios = _padded_inputs()
    with torch.no_grad():
        ref = _run(enc, query, pos, mask, ratios)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = _run(enc, query, pos, mask, ratios)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().mean() < 0.1 * ref.abs().mean()
    # logits / softmax stay fp32 under autocast
    attn = enc.layers[0].self_attn
    ref_pts = DeformableDetrTransformerEncoder.get_encoder_reference_points(
        SHAPES, ratios, device='cpu')
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        _, weights, _ = attn.sample_and_weigh(query + pos, query, mask,
                                              ref_pts, SHAPES)
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights[...,
                                                                        0]))
