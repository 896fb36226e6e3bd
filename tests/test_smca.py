"""SMCA: spatially modulated co-attention, decoder, head, single- and
multi-scale SMCA-DETR."""
import copy

import pytest
import torch
from helpers import det_samples, load_config
from mmcv.cnn.bricks.transformer import MultiheadAttention
from mmdet.models.dense_heads import ConditionalDETRHead
from mmdet.models.layers.transformer import DetrTransformerDecoderLayer
from mmdet.registry import MODELS
from torch import nn

from efficient_detr_mm.smca import (SMCACoAttention, SMCADecoderLayer,
                                    SMCAGaussian, SMCAMultiScaleEncoder,
                                    feature_grid)

SINGLE = 'smca/smca_r18-tiny_1xb4-12e_shapes.py'
MULTI = 'smca/smca-ms_r18-tiny_1xb4-12e_shapes.py'
C, M = 32, 8


def _attn_cfg(**kw):
    return dict(embed_dims=C, num_heads=M, batch_first=True, **kw)


def _layer_cfg(**gaussian):
    ffn = dict(embed_dims=C, feedforward_channels=64)
    return dict(
        self_attn_cfg=_attn_cfg(),
        cross_attn_cfg=_attn_cfg(),
        ffn_cfg=ffn,
        gaussian_cfg=gaussian)


def _model(cfg_path, seed=0):
    torch.manual_seed(seed)
    model = MODELS.build(load_config(cfg_path).model)
    model.init_weights()
    return model.eval()


# ---------------------------------------------------------------- co-attn
def test_beta_inf_equals_detr_cross_attention():
    """log G -> 0 (beta -> inf): the SMCA layer is DETR's decoder layer."""
    torch.manual_seed(0)
    smca = SMCADecoderLayer(**_layer_cfg(beta=1e30)).eval()
    with torch.no_grad():  # random (non-init) modulation weights
        for p in smca.gaussian.parameters():
            p.normal_()
    detr = DetrTransformerDecoderLayer(**{
        k: v
        for k, v in _layer_cfg().items() if k != 'gaussian_cfg'
    }).eval()
    missing, unexpected = detr.load_state_dict(
        smca.state_dict(), strict=False)
    assert not missing
    assert all(k.startswith(('gaussian.', 'norms.3.')) for k in unexpected)
    q, qp = torch.randn(2, 5, C), torch.randn(2, 5, C)
    mem, pos = torch.randn(2, 12, C), torch.randn(2, 12, C)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[1, 8:] = True
    ref = torch.rand(2, 5, 2)
    out = smca(q, mem, mem, qp, pos, key_padding_mask=mask, ref_centre=ref,
               img_wh=torch.tensor([[128., 96.], [96., 64.]]),
               spatial_shapes=[(3, 4)], strides=[32])
    expected = detr(q, mem, mem, qp, pos, key_padding_mask=mask)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # and with a finite beta the Gaussian does change the output
    smca.gaussian.beta = 8.0
    out8 = smca(q, mem, mem, qp, pos, key_padding_mask=mask, ref_centre=ref,
                img_wh=torch.tensor([[128., 96.], [96., 64.]]),
                spatial_shapes=[(3, 4)], strides=[32])
    assert not torch.allclose(out8, expected, atol=1e-3)


def test_log_g_layout_matches_torch_mha_attn_mask():
    """(bs, heads, nq, nk) bias == torch's (bs*heads, nq, nk) float
    attn_mask with row b*heads+h (the official shortcut)."""
    torch.manual_seed(1)
    mine = SMCACoAttention(**_attn_cfg()).eval()
    ref = MultiheadAttention(**_attn_cfg()).eval()
    ref.load_state_dict(mine.state_dict())
    bs, nq, nk = 2, 4, 6
    q, k = torch.randn(bs, nq, C), torch.randn(bs, nk, C)
    bias = torch.randn(bs, M, nq, nk) * 3
    mask = torch.zeros(bs, nk, dtype=torch.bool)
    mask[0, -2:] = True
    out = mine(q, k, k, attn_bias=bias, key_padding_mask=mask)
    expected = ref(q, k, k, attn_mask=bias.reshape(bs * M, nq, nk),
                   key_padding_mask=mask)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_padded_keys_get_zero_weight():
    torch.manual_seed(2)
    attn = SMCACoAttention(**_attn_cfg()).eval()
    q, k = torch.randn(2, 4, C), torch.randn(2, 6, C)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[1, 3:] = True
    # a huge Gaussian bonus on the padded keys must not reach them
    bias = torch.zeros(2, M, 4, 6)
    bias[1, :, :, 3:] = 50.
    out = attn(q, k, k, attn_bias=bias, key_padding_mask=mask)
    k2 = k.clone()
    k2[1, 3:] = torch.randn(3, C) * 100
    out2 = attn(q, k2, k2, attn_bias=bias, key_padding_mask=mask)
    assert torch.equal(out, out2)
    # the same as running image 1 on its valid keys only
    alone = attn(q[1:], k[1:, :3], k[1:, :3], attn_bias=bias[1:, ..., :3])
    torch.testing.assert_close(out[1:], alone, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------- gaussian
def test_log_g_formula_and_layout():
    """Element [b, h, q, p] against a direct evaluation of
    -(wx^2 (x-cx_h)^2 + wy^2 (y-cy_h)^2) / beta with c_h = c + offset_h."""
    torch.manual_seed(3)
    g = SMCAGaussian(C, M, beta=8.0)
    with torch.no_grad():
        for p in g.parameters():
            p.normal_()
    bs, nq, (h, w) = 2, 3, (2, 3)
    f = torch.randn(bs, nq, C)
    ref = torch.rand(bs, nq, 2)
    img_wh = torch.tensor([[96., 64.], [64., 64.]])
    log_g, alpha = g(f, ref, img_wh, [(h, w)], [32])
    assert alpha is None and log_g.shape == (bs, M, nq, h * w)
    off = g.offset_fc(f).view(bs, nq, M, 2)
    sc = g.scale_fc(f).view(bs, nq, M, 2)
    for b in range(bs):
        for hd in range(M):
            for qi in range(nq):
                cx = ref[b, qi, 0] * img_wh[b, 0] / 32 + off[b, qi, hd, 0]
                cy = ref[b, qi, 1] * img_wh[b, 1] / 32 + off[b, qi, hd, 1]
                for p in range(h * w):
                    y, x = divmod(p, w)  # row-major flattening
                    d = (sc[b, qi, hd, 0]**2 * (x - cx)**2 +
                         sc[b, qi, hd, 1]**2 * (y - cy)**2)
                    torch.testing.assert_close(
                        log_g[b, hd, qi, p], -d / 8.0, rtol=1e-5,
                        atol=1e-5)


def test_feature_grid_row_major_xy():
    grid = feature_grid(2, 3, torch.device('cpu'))
    assert grid.tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1],
                             [2, 1]]


@pytest.mark.parametrize('cfg_path', [SINGLE, MULTI])
def test_scale_multipliers_are_one_at_init(cfg_path):
    model = _model(cfg_path)
    f = torch.randn(2, 7, model.embed_dims)
    for layer in model.decoder.layers:
        fc = layer.gaussian.scale_fc
        assert torch.all(fc.weight == 0) and torch.all(fc.bias == 1)
        assert torch.equal(fc(f)**2, torch.ones(2, 7, fc.out_features))


@pytest.mark.parametrize('modulation,n_scale,heads', [
    ('per_head_xy', 2, M), ('per_head_iso', 1, M), ('fixed', 0, M),
    ('shared', 2, 1)
])
def test_modulation_modes(modulation, n_scale, heads):
    torch.manual_seed(4)
    g = SMCAGaussian(C, M, modulation=modulation)
    g.init_weights()
    assert g.num_scales == n_scale
    assert (g.offset_fc is None) == (modulation == 'shared')
    log_g, _ = g(torch.randn(2, 3, C), torch.rand(2, 3, 2),
                 torch.tensor([[64., 64.], [64., 32.]]), [(2, 2)], [32])
    assert log_g.shape == (2, heads, 3, 4)
    assert torch.all(log_g <= 0)
    if modulation == 'fixed':  # unit scale: -|p - c|^2 / beta
        with torch.no_grad():
            g.offset_fc.weight.zero_()
            g.offset_fc.bias.zero_()
        ref = torch.full((1, 1, 2), 0.5)
        log_g, _ = g(torch.randn(1, 1, C), ref, torch.tensor([[64., 64.]]),
                     [(2, 2)], [32])  # centre (1, 1)
        assert log_g[0, 0, 0].tolist() == [-2 / 8, -1 / 8, -1 / 8, 0.0]
    # and the whole layer runs with it
    layer = SMCADecoderLayer(**_layer_cfg(modulation=modulation))
    out = layer(torch.randn(2, 3, C), torch.randn(2, 4, C),
                torch.randn(2, 4, C), torch.randn(2, 3, C),
                torch.randn(2, 4, C), ref_centre=torch.rand(2, 3, 2),
                img_wh=torch.tensor([[64., 64.], [64., 32.]]),
                spatial_shapes=[(2, 2)], strides=[32])
    assert out.shape == (2, 3, C)


def test_bad_configs_fail_at_build():
    with pytest.raises(ValueError, match='modulation'):
        SMCAGaussian(C, M, modulation='type3')
    with pytest.raises(ValueError, match='beta'):
        SMCAGaussian(C, M, beta=0)
    with pytest.raises(ValueError, match='layer_types'):
        SMCAMultiScaleEncoder(
            num_layers=2,
            layer_cfg=dict(
                self_attn_cfg=_attn_cfg(),
                ffn_cfg=dict(embed_dims=C)),
            layer_types=('intra', 'cross'))
    cfg = load_config(MULTI).model
    cfg.feat_strides = (32, )
    with pytest.raises(ValueError, match='num_levels'):
        MODELS.build(cfg)
    cfg = load_config(MULTI).model
    cfg.encoder = load_config(SINGLE).model.encoder
    with pytest.raises(ValueError, match='SMCAMultiScaleEncoder'):
        MODELS.build(cfg)


# ------------------------------------------------------------------- head
def test_head_adds_pre_sigmoid_centre_to_every_layer():
    model = _model(SINGLE)
    head = model.bbox_head
    hs = torch.randn(2, 3, 5, model.embed_dims)
    ref_logit = torch.randn(3, 5, 2)
    cls, boxes = head(hs, ref_logit)
    reg = head.fc_reg(head.activate(head.reg_ffn(hs)))
    torch.testing.assert_close(boxes[..., :2],
                               (reg[..., :2] + ref_logit).sigmoid())
    torch.testing.assert_close(boxes[..., 2:], reg[..., 2:].sigmoid())
    # = ConditionalDETRHead given the sigmoid centre (up to its clamping)
    _, cond = ConditionalDETRHead.forward(head, hs, ref_logit.sigmoid())
    torch.testing.assert_close(boxes, cond, rtol=1e-4, atol=1e-5)
    assert torch.allclose(head.fc_cls.bias, torch.tensor(-4.59512),
                          atol=1e-4)


# ---------------------------------------------------------- detector level
def _feats_pair(model, shapes, strides, seed=5):
    """Per-image features and the same images garbage-padded
    into one batch."""
    torch.manual_seed(seed)
    H, W = max(s[0] for s in shapes), max(s[1] for s in shapes)
    alone, batch = [], []
    for stride in strides:
        per = [torch.randn(1, model.embed_dims, h // stride, w // stride)
               for h, w in shapes]
        big = torch.randn(len(shapes), model.embed_dims, H // stride,
                          W // stride) * 10  # garbage in the padding
        for i, p in enumerate(per):
            big[i, :, :p.shape[2], :p.shape[3]] = p[0]
        alone.append(per)
        batch.append(big)
    return alone, batch


def _head_out(model, feats, samples):
    with torch.no_grad():
        out = model.forward_transformer(tuple(feats), samples)
        return model.bbox_head(out['hidden_states'], out['references'])


@pytest.mark.parametrize('cfg_path,strides,shapes', [
    (SINGLE, (32, ), [(96, 128), (64, 96)]),
    (MULTI, (16, 32, 64), [(128, 192), (64, 128)]),
])
def test_batch_of_two_sizes_equals_each_alone(cfg_path, strides, shapes):
    model = _model(cfg_path)
    alone, batch = _feats_pair(model, shapes, strides)
    cls_b, box_b = _head_out(model, batch, det_samples(shapes))
    for i, shape in enumerate(shapes):
        cls_a, box_a = _head_out(model, [lv[i] for lv in alone],
                                 det_samples([shape]))
        torch.testing.assert_close(cls_b[:, i:i + 1], cls_a, rtol=0,
                                   atol=1e-5)
        torch.testing.assert_close(box_b[:, i:i + 1], box_a, rtol=0,
                                   atol=1e-5)


def test_centres_use_each_images_unpadded_size():
    model = _model(SINGLE)
    seen = []
    model.decoder.layers[0].gaussian.register_forward_hook(
        lambda m, args, out: seen.append(args))
    shapes = [(96, 128), (64, 96)]
    _, batch = _feats_pair(model, shapes, (32, ))
    _head_out(model, batch, det_samples(shapes))
    img_wh = seen[0][2]
    assert img_wh.tolist() == [[128., 96.], [96., 64.]]


# ------------------------------------------------------------ multi-scale
def test_multiscale_alpha_is_per_image():
    model = _model(MULTI)
    alphas = []
    for layer in model.decoder.layers:
        layer.gaussian.register_forward_hook(
            lambda m, args, out: alphas.append(out[1]))
    shapes = [(128, 192), (128, 192)]
    _, batch = _feats_pair(model, shapes, (16, 32, 64))
    _head_out(model, batch, det_samples(shapes))
    last = alphas[-1]
    assert last.shape == (2, model.num_queries, 3)
    torch.testing.assert_close(last.sum(-1), torch.ones(2, model.num_queries))
    assert not torch.allclose(last[0], last[1], atol=1e-4)


def test_multiscale_co_attention_mixes_per_image_alpha():
    torch.manual_seed(6)
    attn = SMCACoAttention(**_attn_cfg()).eval()
    bs, nq, sizes = 2, 3, [4, 2, 1]
    q, k = torch.randn(bs, nq, C), torch.randn(bs, sum(sizes), C)
    bias = torch.randn(bs, M, nq, sum(sizes))
    alpha = torch.rand(bs, nq, 3).softmax(-1)
    out = attn(q, k, k, attn_bias=bias, level_sizes=sizes,
               level_weights=alpha, identity=torch.zeros(bs, nq, C))
    # reference: sum_j alpha_j * (plain attention restricted to level j)
    # through the out projection, which is linear
    wo, bo = attn.attn.out_proj.weight, attn.attn.out_proj.bias
    expected = torch.zeros(bs, nq, C)
    start = 0
    for j, n in enumerate(sizes):
        sl = slice(start, start + n)
        part = attn(q, k[:, sl], k[:, sl], attn_bias=bias[..., sl],
                    identity=torch.zeros(bs, nq, C))
        expected += alpha[..., j:j + 1] * (part - bo) @ torch.linalg.inv(
            wo).T
        start += n
    expected = expected @ wo.T + bo
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    # image 1 does not use image 0's alpha (the released code's bug)
    alone = attn(q[1:], k[1:], k[1:], attn_bias=bias[1:], level_sizes=sizes,
                 level_weights=alpha[1:], identity=torch.zeros(1, nq, C))
    torch.testing.assert_close(out[1:], alone, rtol=1e-5, atol=1e-6)


def test_multiscale_encoder_order_and_shared_intra_weights():
    cfg = load_config('smca/smca-ms_r50_8xb1-50e_coco.py').model
    cfg.backbone.init_cfg = None
    enc = MODELS.build(cfg.encoder).eval()
    assert enc.layer_types == ('intra', 'intra', 'multi', 'intra', 'intra')
    assert len(enc.layers) == 5  # no per-scale copies of a layer
    per_layer = sum(p.numel() for p in enc.layers[0].parameters())
    assert sum(p.numel() for p in enc.parameters()) == 5 * per_layer

    calls = []
    for i, layer in enumerate(enc.layers):
        layer.register_forward_hook(
            lambda m, a, kw, out, i=i: calls.append((i, out.shape[1])),
            with_kwargs=True)
    shapes = [(4, 6), (2, 3), (1, 2)]
    n = [h * w for h, w in shapes]
    x, pos = torch.randn(2, sum(n), 256), torch.randn(2, sum(n), 256)
    with torch.no_grad():
        out = enc(x, pos, None, spatial_shapes=shapes)
    # intra layers run once per scale (on that scale's tokens), the
    # multi-scale layer once on all tokens: intra, intra, multi, intra, intra
    expected = []
    for i, kind in enumerate(enc.layer_types):
        expected += [(i, m) for m in n] if kind == 'intra' else [(i, sum(n))]
    assert calls == expected
    # an intra layer on a scale equals that same layer on the scale alone
    layer = enc.layers[0]
    with torch.no_grad():
        full = torch.cat([
            layer(query=a, query_pos=b, key_padding_mask=None)
            for a, b in zip(x.split(n, 1), pos.split(n, 1))
        ], 1)
        enc1 = copy.deepcopy(enc)
        enc1.layers = enc1.layers[:1]
        enc1.layer_types = ('intra', )
        torch.testing.assert_close(enc1(x, pos, None, spatial_shapes=shapes),
                                   full)
    # only the multi layer lets scales talk: perturb scale 0
    x2 = x.clone()
    x2[:, :n[0]] += 1.0
    with torch.no_grad():
        enc_intra = copy.deepcopy(enc)
        enc_intra.layers = nn.ModuleList([enc.layers[i] for i in (0, 1, 3)])
        enc_intra.layer_types = ('intra', ) * 3
        a = enc_intra(x, pos, None, spatial_shapes=shapes)
        b = enc_intra(x2, pos, None, spatial_shapes=shapes)
        assert torch.equal(a[:, n[0]:], b[:, n[0]:])
        out2 = enc(x2, pos, None, spatial_shapes=shapes)
        assert not torch.allclose(out[:, n[0]:], out2[:, n[0]:])


def test_multiscale_features_strides_16_32_64():
    cfg = load_config('smca/smca-ms_r50_8xb1-50e_coco.py').model
    cfg.backbone.init_cfg = None
    model = MODELS.build(cfg).eval()
    assert model.feat_strides == (16, 32, 64)
    with torch.no_grad():
        feats = model.extract_feat(torch.rand(1, 3, 128, 192))
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 12), (4, 6), (2, 3)]
    assert model.level_embed.shape == (3, 256)


# ------------------------------------------------------------------ flops
def test_flop_count_hand_computed():
    g = SMCAGaussian(4, 2)  # offsets 4 + scales 4 outputs
    f = torch.randn(1, 2, 4)
    args = (f, torch.rand(1, 2, 2), torch.tensor([[64., 96.]]), [(2, 3)],
            [32])
    # linear: 1*2 queries * 4 in * 8 out = 64; maps: 1*2 queries * 2 heads
    # * 6 keys * (2 squares + 2 scale products + 1 factor) = 120
    assert g.flop_count(args, {}, g(*args)) == 64 + 120
    g3 = SMCAGaussian(4, 2, num_levels=2, modulation='shared')
    args = (f, torch.rand(1, 2, 2), torch.tensor([[64., 96.]]),
            [(2, 3), (1, 1)], [32, 64])
    # linear: 2 * 4 * (scales 2*1*2 + alpha 2) = 48; maps: 2 * 1 head * 7
    # keys * 5 = 70
    assert g3.flop_count(args, {}, g3(*args)) == 48 + 70
    attn = SMCACoAttention(embed_dims=4, num_heads=2, batch_first=True)
    q, k = torch.randn(1, 2, 4), torch.randn(1, 6, 4)
    # q, out proj: 2*2*16 = 64; k, v proj: 2*6*16 = 192; qk^T and Av:
    # 2 * (2*6*4) = 96
    assert attn.flop_count((q, k, k), {}, None) == 64 + 192 + 96
    # + alpha products: 2 heads * 2 queries * 6 keys = 24
    assert attn.flop_count((q, k, k), dict(level_sizes=[4, 2]),
                           None) == 64 + 192 + 96 + 24


# ---------------------------------------------------------- visualisation
@pytest.mark.parametrize('cfg_path', [SINGLE, MULTI])
def test_gaussian_map_pictures(cfg_path, tmp_path):
    from efficient_detr_mm.visualization.smca import (draw_smca_maps,
                                                      smca_gaussian_maps)
    model = _model(cfg_path)
    shapes = [(128, 192), (64, 128)]
    inputs = torch.rand(2, 3, 128, 192)
    res = smca_gaussian_maps(model, inputs, det_samples(shapes), topk=3)
    assert res['stride'] == 32
    h, w = res['spatial_shape']
    assert (h, w) == (4, 6)
    assert res['maps'].shape == (2, 3, 8, h, w)
    assert torch.all((res['maps'] > 0) & (res['maps'] <= 1))
    assert res['boxes'].shape == (2, 3, 4)
    out = tmp_path / 'maps.png'
    draw_smca_maps(
        (inputs[0].permute(1, 2, 0) * 255).byte().numpy(),
        res['maps'][0].numpy(),
        res['boxes'][0].numpy(),
        str(out),
        scores=res['scores'][0].tolist(),
        pad_shape=(128, 192))
    assert out.stat().st_size > 0


def test_autocast_keeps_log_g_and_softmax_fp32():
    torch.manual_seed(7)
    layer = SMCADecoderLayer(**_layer_cfg()).eval()
    seen = {}
    layer.gaussian.register_forward_hook(
        lambda m, a, out: seen.update(dtype=out[0].dtype))
    args = (torch.randn(2, 3, C), torch.randn(2, 4, C), torch.randn(2, 4, C),
            torch.randn(2, 3, C), torch.randn(2, 4, C))
    kwargs = dict(
        ref_centre=torch.rand(2, 3, 2),
        img_wh=torch.tensor([[64., 64.], [64., 32.]]),
        spatial_shapes=[(2, 2)],
        strides=[32],
        key_padding_mask=torch.tensor([[False] * 4, [False, True] * 2]))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = layer(*args, **kwargs)
    assert seen['dtype'] == torch.float32
    assert torch.isfinite(out).all()
    torch.testing.assert_close(
        out.float(), layer(*args, **kwargs), rtol=0.1, atol=0.1)
