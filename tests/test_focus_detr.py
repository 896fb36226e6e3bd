"""Focus-DETR: selector, FTS labels + loss, encoder, detector."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import det_samples, load_config
from mmdet.registry import MODELS

from efficient_detr_mm.focus_detr import (FocusEncoder,
                                          ForegroundTokenSelector, FTSLoss,
                                          fts_targets)

TINY = 'focus_detr/focus-detr-4scale_r18-tiny_1xb4-12e_shapes.py'
R50_12E = 'focus_detr/focus-detr-4scale_r50_8xb2-12e_coco.py'
# R50 4-scale at 800 x 1333: strides 8 / 16 / 32 / 64
SHAPES_800 = [(100, 167), (50, 84), (25, 42), (13, 21)]


def _tiny_cfg(embed_dims=None, **encoder):
    cfg = load_config(TINY).model
    cfg.encoder.update(encoder)
    if embed_dims is not None:
        c = embed_dims
        for part in (cfg.encoder.layer_cfg, cfg.decoder.layer_cfg):
            for v in part.values():
                if isinstance(v, dict) and 'embed_dims' in v:
                    v.embed_dims = c
                if isinstance(v, dict) and 'feedforward_channels' in v:
                    v.feedforward_channels = 2 * c
        cfg.neck.out_channels = c
        cfg.positional_encoding.num_feats = c // 2
        cfg.bbox_head.embed_dims = c
    return cfg


def _build(cfg, seed=0):
    torch.manual_seed(seed)
    model = MODELS.build(copy.deepcopy(cfg))
    model.init_weights()
    return model


def _feats(model, shapes, samples, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = model.embed_dims
    bs = len(samples)
    return tuple(torch.randn(bs, c, h, w, generator=g) for h, w in shapes)


def _count_params(m):
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------- params


def test_added_parameters_over_mmdet_dino_r50():
    focus_cfg = load_config(R50_12E).model
    dino_cfg = load_config('dino/dino-4scale_r50_8xb2-12e_coco.py').model
    dino_cfg.type = 'DINO'  # mmdet's own class
    for cfg in (focus_cfg, dino_cfg):
        cfg.backbone.init_cfg = None
    focus = MODELS.build(focus_cfg)
    dino = MODELS.build(dino_cfg)
    assert type(dino).__name__ == 'DINO'
    # 107,521 (scorer) + 3 (alpha) + 6 x (263,168 MHA + 512 LN)
    # + 4 x 256 neck conv biases (detrex's ChannelMapper has them)
    assert _count_params(focus) - _count_params(dino) == 1_689_604 + 1_024


# ------------------------------------------------------- selection at 800


def test_token_counts_nested_and_untouched_at_800x1333():
    torch.manual_seed(0)
    cfg = _tiny_cfg(embed_dims=32, num_layers=6, num_fine_tokens=300)
    cfg.selector.cascade = [1.0, 0.8, 0.6, 0.6, 0.4, 0.2]
    model = _build(cfg).eval()
    samples = det_samples([(800, 1333)])
    feats = _feats(model, SHAPES_800, samples)
    enc_in, _ = model.pre_transformer(feats, samples)
    n = sum(h * w for h, w in SHAPES_800)
    assert enc_in['feat'].shape[1] == n == 22223

    seen, oesm = [], []
    hooks = [
        layer.register_forward_hook(
            lambda m, a, kw, out: seen.append(kw['query'].shape[1]),
            with_kwargs=True) for layer in model.encoder.layers
    ] + [
        layer.oesm_attn.register_forward_hook(
            lambda m, a, kw, out: oesm.append(kw['query'].shape[1]),
            with_kwargs=True) for layer in model.encoder.layers
    ]
    with torch.no_grad():
        out = model.forward_encoder(**enc_in)
    for h in hooks:
        h.remove()
    sel = out['fts_selection']
    expected = [11112, 8889, 6667, 6667, 4444, 2222]
    assert seen == expected
    assert sel['sizes'] == expected
    assert [int(u.sum()) for u in sel['updates']] == expected
    assert oesm == [300] * 6

    # nested: every layer's updated set lies inside the previous one's
    sets = [
        set(sel['indices'][0, :k][u[0]].tolist())
        for k, u in zip(sel['sizes'], sel['updates'])
    ]
    assert all(len(s) == k for s, k in zip(sets, expected))
    for a, b in zip(sets, sets[1:]):
        assert b <= a

    # tokens outside the first set: bit-identical to the encoder input
    outside = torch.ones(n, dtype=torch.bool)
    outside[list(sets[0])] = False
    x, mem = enc_in['feat'][0], out['memory'][0]
    assert torch.equal(mem[outside], x[outside])
    # ... and the first set was really updated
    assert not torch.equal(mem[~outside], x[~outside])


def test_selector_budget_arithmetic_and_any_level_count():
    sel = ForegroundTokenSelector(embed_dims=32, num_levels=2,
                                  cascade=[1.0, 0.5])
    valid = torch.ones(1, 7, dtype=torch.bool)
    assert sel.budgets(valid).tolist() == [4]  # floor(3.5) + 1
    assert sel.layer_sizes(sel.budgets(valid)) == [4, 2]
    out = sel.select(torch.randn(1, 7), None)
    assert out['sizes'] == [4, 2]
    # one-level selector has no modulation coefficient and still scores
    one = ForegroundTokenSelector(embed_dims=32, num_levels=1, cascade=[1.0])
    assert one.alpha.numel() == 0
    s = one.score(torch.randn(2, 12, 32), torch.tensor([[3, 4]]))
    assert s.shape == (2, 12)


def test_top_down_modulation_uses_upsampled_coarser_logits():
    torch.manual_seed(0)
    sel = ForegroundTokenSelector(embed_dims=32, num_levels=3,
                                  cascade=[1.0])
    shapes = torch.tensor([[6, 8], [3, 4], [2, 2]])
    z = torch.randn(2, 48 + 12 + 4, 32)
    with torch.no_grad():
        sel.alpha.copy_(torch.tensor([0.7, -0.4]))
        s = sel.score(z, shapes)
        z0, z1, z2 = z[:, :48], z[:, 48:60], z[:, 60:]
        s2 = sel.scorer(z2)  # coarsest: unmodulated
        up = F.interpolate(s2.view(2, 1, 2, 2), size=(3, 4),
                           mode='bilinear', align_corners=True).view(2, 12, 1)
        s1 = sel.scorer(z1 * (1 + 0.7 * up))  # alpha[0]: level 2 -> 1
        up = F.interpolate(s1.view(2, 1, 3, 4), size=(6, 8),
                           mode='bilinear', align_corners=True).view(2, 48, 1)
        s0 = sel.scorer(z0 * (1 - 0.4 * up))  # alpha[1]: level 1 -> 0
    torch.testing.assert_close(s, torch.cat([s0, s1, s2], 1))
    # alpha receives gradient from the scores (trained by the FTS loss)
    sel.score(z, shapes).sum().backward()
    assert sel.alpha.grad is not None and sel.alpha.grad.abs().sum() > 0


def test_scorer_global_mean_ignores_padded_tokens():
    torch.manual_seed(0)
    sel = ForegroundTokenSelector(embed_dims=32, num_levels=1, cascade=[1.0])
    z = torch.randn(1, 12, 32)  # a 3 x 4 map whose last row is padding
    valid = torch.ones(1, 12, dtype=torch.bool)
    valid[:, 8:] = False
    with torch.no_grad():
        padded = sel.score(z, torch.tensor([[3, 4]]), valid)
        alone = sel.score(z[:, :8], torch.tensor([[2, 4]]))
        counted = sel.score(z, torch.tensor([[3, 4]]))  # padding counted
    torch.testing.assert_close(padded[:, :8], alone)
    assert not torch.allclose(counted[:, :8], alone)
    # the padded tokens are never selected
    out = sel.select(padded, ~valid)
    assert out['budget'].tolist() == [5]
    assert (out['indices'] < 8).all()


# ------------------------------------------------------------ FTS labels


def _brute_force_labels(shapes, strides, ranges, box, measure='ltrb_max'):
    x0, y0, x1, y1 = box
    out = []
    for (h, w), s, (lo, hi) in zip(shapes, strides, ranges):
        for i in range(h):
            for j in range(w):
                x, y = j * s + s // 2, i * s + s // 2
                l, t, r, b = x - x0, y - y0, x1 - x, y1 - y
                inside = min(l, t, r, b) > 0
                if measure == 'ltrb_max':
                    d = max(l, t, r, b)
                else:
                    d = max(abs(x - (x0 + x1) / 2), abs(y - (y0 + y1) / 2))
                out.append(float(inside and lo < d <= hi))
    return torch.tensor(out)


def test_fts_labels_single_centred_100px_box():
    # 400 x 400 input, strides 8..64 -> levels 50x50, 25x25, 7x7 (ceil), ...
    shapes = [(50, 50), (25, 25), (13, 13), (7, 7)]
    box = [150.0, 150.0, 250.0, 250.0]
    ranges = [(-1, 64), (64, 128), (128, 256), (256, 999999)]
    labels = fts_targets(
        torch.tensor(shapes), [torch.tensor([box])], strides=(8, 16, 32, 64))
    assert labels.shape == (1, 2500 + 625 + 169 + 49)
    expected = _brute_force_labels(shapes, (8, 16, 32, 64), ranges, box)
    assert torch.equal(labels[0], expected)
    lv = labels[0].split([2500, 625, 169, 49])
    # spec checklist: centre region on level 0, outer ring on level 1,
    # nothing on levels 2 and 3
    assert lv[0].sum() > 0 and lv[1].sum() > 0
    assert lv[2].sum() == 0 and lv[3].sum() == 0
    l0, l1 = lv[0].view(50, 50), lv[1].view(25, 25)
    assert l0[24, 24] == 1 and l0[25, 25] == 1  # pixels (196|204): d ~ 54
    assert l1[12, 12] == 0  # level-1 centre (200, 200): d = 50 <= 64
    assert l1[9, 9] == 1  # (152, 152): d = 98, in (64, 128]
    assert l0[18, 18] == 0  # (148, 148) is outside the box
    # paper's centre-distance measure: d <= 50, all on level 0
    paper = fts_targets(
        torch.tensor(shapes), [torch.tensor([box])],
        scale_measure='center_chebyshev')
    assert torch.equal(
        paper[0],
        _brute_force_labels(shapes, (8, 16, 32, 64), ranges, box,
                            'center_chebyshev'))
    assert paper[0, 2500:].sum() == 0 and paper[0, :2500].sum() > 0


def test_fts_labels_empty_image_and_finite_loss():
    shapes = torch.tensor([(12, 16), (6, 8), (3, 4), (2, 2)])
    labels = fts_targets(shapes, [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert labels.shape == (2, 192 + 48 + 12 + 4)
    assert labels.sum() == 0
    loss = FTSLoss()(torch.randn(2, 256), labels)
    assert torch.isfinite(loss) and loss > 0
    # mixed: one image with a box, one without
    labels = fts_targets(shapes,
                         [torch.tensor([[8., 8., 60., 50.]]),
                          torch.zeros(0, 4)])
    assert labels[0].sum() > 0 and labels[1].sum() == 0


def test_fts_loss_value_at_zero_logits():
    n, p = 1000, 40
    targets = torch.zeros(2, n)
    targets[:, :p] = 1
    loss = FTSLoss()(torch.zeros(2, n), targets)
    neg = 0.75 * 0.25 * math.log(2)  # (1 - 0.5)^2 * ln 2 * (1 - alpha)
    pos = 0.25 * 0.25 * math.log(2)
    expected = 1.5 * (neg * (n - p) + pos * p) / p
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # padded tokens are left out of sum and normaliser
    valid = torch.ones(2, n, dtype=torch.bool)
    valid[1, 500:] = False
    loss = FTSLoss()(torch.zeros(2, n), targets, valid)
    img1 = (neg * (500 - p) + pos * p) / p
    assert loss.item() == pytest.approx(1.5 * (expected / 1.5 + img1) / 2,
                                        rel=1e-5)


def test_fts_loss_finite_under_autocast_with_large_logits():
    torch.manual_seed(0)
    logits = (torch.randint(0, 2, (2, 500)).float() * 60 - 30)
    logits.requires_grad_(True)
    targets = torch.randint(0, 2, (2, 500)).float()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = logits.to(torch.bfloat16)  # what an fp16/bf16 head would give
        loss = FTSLoss()(low, targets)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    # equals the focal loss in float64 from log-sigmoid
    x, t = logits.detach().double(), targets.double()
    logp, log1mp = F.logsigmoid(x), F.logsigmoid(-x)
    p = x.sigmoid()
    el = -(0.25 * t * (1 - p)**2 * logp + 0.75 * (1 - t) * p**2 * log1mp)
    ref = (el.sum(1) / t.sum(1).clamp(min=1)).mean() * 1.5
    assert loss.item() == pytest.approx(ref.item(), rel=1e-4)


# ------------------------------------------------------ padded batches


def _padded_setup(per_image_budget, partner):
    cfg = _tiny_cfg(num_layers=2)
    cfg.selector.per_image_budget = per_image_budget
    model = _build(cfg).eval()
    samples = det_samples([(64, 80), partner], batch_shape=(96, 128))
    shapes = [(12, 16), (6, 8), (3, 4), (2, 2)]
    feats = list(_feats(model, shapes, samples, seed=3))
    # the partner's features differ between the two batches
    g = torch.Generator().manual_seed(partner[0] * 1000 + partner[1])
    for f in feats:
        f[1] = torch.randn(f[1].shape, generator=g)
    enc_in, _ = model.pre_transformer(tuple(feats), samples)
    return model, enc_in


def test_padded_tokens_never_selected_or_keys():
    model, enc_in = _padded_setup(False, (96, 128))
    mask = enc_in['feat_mask']
    assert mask is not None and mask[0].any() and not mask[1].any()
    keys = []
    hooks = [
        layer.oesm_attn.register_forward_hook(
            lambda m, a, kw, out: keys.append(kw['key_padding_mask']),
            with_kwargs=True) for layer in model.encoder.layers
    ]
    with torch.no_grad():
        out = model.forward_encoder(**enc_in)
    for h in hooks:
        h.remove()
    sel = out['fts_selection']
    valid = ~mask
    for k, upd in zip(sel['sizes'], sel['updates']):
        picked = valid.gather(1, sel['indices'][:, :k])
        assert picked[upd].all()  # every written-back token is real
    # the OESM masks exactly the non-real entries
    assert all(kpm is not None for kpm in keys)
    # padded tokens keep their input value
    x, mem = enc_in['feat'], out['memory']
    assert torch.equal(mem[mask], x[mask])

    # changing the padded tokens changes nothing at real tokens: they are
    # neither selected, nor keys of the OESM, nor deformable values, nor in
    # the scorer's global mean
    enc2 = dict(enc_in)
    noise = torch.randn_like(enc_in['feat']) * 10
    enc2['feat'] = torch.where(mask[..., None], noise, enc_in['feat'])
    enc2['feat_pos'] = torch.where(mask[..., None], -noise,
                                   enc_in['feat_pos'])
    with torch.no_grad():
        out2 = model.forward_encoder(**enc2)
    torch.testing.assert_close(out2['memory'][valid], out['memory'][valid])
    torch.testing.assert_close(out2['fts_logits'][valid],
                               out['fts_logits'][valid])


def test_per_image_budget_exact_counts_and_partner_independence():
    results = {}
    for per_image in (False, True):
        for partner in ((96, 128), (72, 100)):
            model, enc_in = _padded_setup(per_image, partner)
            with torch.no_grad():
                out = model.forward_encoder(**enc_in)
            sel = out['fts_selection']
            v0 = int((~enc_in['feat_mask'][0]).sum())
            counts = [int(u[0].sum()) for u in sel['updates']]
            results[per_image, partner] = (counts, out['memory'][0], v0)
    counts, _, v0 = results[True, (96, 128)]
    assert 0 < v0 < 256
    n_b = math.floor(0.5 * v0) + 1
    assert counts == [
        int(torch.tensor(c, dtype=torch.float32) * n_b) for c in (1.0, 0.6)
    ]
    # per-image budget: the small image's result ignores its partner
    assert results[True, (72, 100)][0] == counts
    torch.testing.assert_close(results[True, (72, 100)][1],
                               results[True, (96, 128)][1])
    # official batch-max budget: its count depends on the partner
    assert results[False, (96, 128)][0] != results[False, (72, 100)][0]


# ------------------------------------------------------ detector / encoder


def test_small_64x64_input_trains_and_predicts():
    # 64x64 gives 8x8 + 4x4 + 2x2 + 1x1 = 85 tokens < 300 OESM tokens;
    # (mmdet's DINO query selection itself needs num_queries <= tokens)
    cfg = _tiny_cfg(num_fine_tokens=300)
    cfg.num_queries = 50
    model = _build(cfg)
    inputs = torch.rand(2, 3, 64, 64)
    samples = det_samples([(64, 64), (64, 64)],
                          boxes=[[[4, 6, 40, 50]], []],
                          labels=[[1], []])
    model.train()
    losses = model.loss(inputs, copy.deepcopy(samples))
    assert torch.isfinite(losses['loss_fts'])
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert model.selector.alpha.grad is not None
    model.eval()
    with torch.no_grad():
        res = model.predict(inputs, copy.deepcopy(samples))
    assert len(res) == 2 and res[0].pred_instances.bboxes.shape[1] == 4


def test_eval_returns_no_extra_keys_and_train_adds_loss():
    model = _build(_tiny_cfg())
    samples = det_samples([(96, 128), (80, 100)],
                          boxes=[[[10, 10, 60, 50]], [[5, 5, 40, 70]]],
                          labels=[[1], [2]])
    feats = _feats(model, [(12, 16), (6, 8), (3, 4), (2, 2)], samples)
    model.eval()
    with torch.no_grad():
        head_in = model.forward_transformer(feats, samples)
        assert set(head_in) == {'hidden_states', 'references'}
        outs = model._forward(torch.rand(2, 3, 96, 128), samples)
    assert len(outs) == 2
    model.train()
    losses = model.loss(torch.rand(2, 3, 96, 128), samples)
    assert 'loss_fts' in losses and torch.isfinite(losses['loss_fts'])
    assert 'enc_loss_cls' in losses and 'dn_loss_cls' in losses


@pytest.mark.parametrize('options', [
    dict(value_source='memory'),
    dict(mc_score='prob_product'),
    dict(num_fine_tokens=0),
])
def test_encoder_options_run_and_change_the_result(options):
    base = _build(_tiny_cfg()).eval()
    other = _build(_tiny_cfg(**options)).eval()
    other.load_state_dict(base.state_dict())
    samples = det_samples([(96, 128)])
    feats = _feats(base, [(12, 16), (6, 8), (3, 4), (2, 2)], samples)
    with torch.no_grad():
        a = base.forward_encoder(**base.pre_transformer(feats, samples)[0])
        b = other.forward_encoder(**other.pre_transformer(feats, samples)[0])
    assert torch.isfinite(b['memory']).all()
    assert not torch.equal(a['memory'], b['memory'])


def test_bad_config_fails_at_build_time_naming_the_key():
    with pytest.raises(ValueError, match='mc_score'):
        MODELS.build(_tiny_cfg(mc_score='softmax'))
    with pytest.raises(ValueError, match='value_source'):
        MODELS.build(_tiny_cfg(value_source='neck'))
    cfg = _tiny_cfg()
    cfg.selector.cascade = [1.0, 0.8, 0.6]
    with pytest.raises(ValueError, match='cascade'):
        MODELS.build(cfg)
    cfg = _tiny_cfg()
    cfg.selector.cascade = [0.5, 1.0]
    with pytest.raises(ValueError, match='cascade'):
        MODELS.build(cfg)
    cfg = _tiny_cfg()
    cfg.fts_loss.ranges = 'wide'
    with pytest.raises(ValueError, match='ranges'):
        MODELS.build(cfg)
    cfg = _tiny_cfg()
    cfg.fts_loss.scale_measure = 'l2'
    with pytest.raises(ValueError, match='scale_measure'):
        MODELS.build(cfg)


def test_focus_encoder_is_registered_and_builds_standalone():
    enc = MODELS.build(
        dict(
            type='FocusEncoder',
            num_layers=1,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=32, num_levels=2),
                oesm_cfg=dict(embed_dims=32, num_heads=4),
                ffn_cfg=dict(embed_dims=32, feedforward_channels=64))))
    assert isinstance(enc, FocusEncoder)
    sel = ForegroundTokenSelector(embed_dims=32, num_levels=2, cascade=[0.5])
    shapes = torch.tensor([[4, 4], [2, 2]])
    x = torch.randn(1, 20, 32)
    logits = sel.score(x, shapes)
    s = sel.select(logits)
    out = enc(x, torch.zeros_like(x), None, shapes, torch.tensor([0, 16]),
              torch.ones(1, 2, 2), selection=s, fg_logits=logits)
    assert out.shape == x.shape


def test_focus_encoder_with_kd_attention_from_config():
    if MODELS.get('KDAttention') is None:
        pytest.skip('KDAttention (Lite DETR) is not available')
    cfg = _tiny_cfg()
    cfg.encoder.layer_cfg.self_attn_cfg.type = 'KDAttention'
    model = _build(cfg)
    attn = model.encoder.layers[0].self_attn
    assert type(attn).__name__ == 'KDAttention'
    samples = det_samples([(96, 128), (80, 100)],
                          boxes=[[[10, 10, 60, 50]], [[5, 5, 40, 70]]],
                          labels=[[1], [2]])
    model.train()
    losses = model.loss(torch.rand(2, 3, 96, 128), copy.deepcopy(samples))
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in attn.parameters())
    model.eval()
    with torch.no_grad():
        res = model.predict(torch.rand(2, 3, 96, 128), samples)
    assert len(res) == 2
