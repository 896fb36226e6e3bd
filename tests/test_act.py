"""ACT: E2LSH clustering, ACTAttention, ACTDETR (smca_act.md B)."""
import copy

import numpy as np
import pytest
import torch
from helpers import det_samples, load_config
from mmcv.cnn.bricks.transformer import MultiheadAttention
from mmdet.registry import MODELS

from efficient_detr_mm.act import ACTAttention
from efficient_detr_mm.act import act_attention as act_mod
from efficient_detr_mm.act import (act_enabled, broadcast, cluster_ids,
                                   cluster_means, e2lsh_codes, pack_codes)

C, H = 32, 4


def _pair(batch_first=True, **act_kwargs):
    torch.manual_seed(0)
    ref = MultiheadAttention(
        C, H, attn_drop=0.1, batch_first=batch_first).eval()
    act = ACTAttention(
        C, H, attn_drop=0.1, batch_first=batch_first, **act_kwargs).eval()
    missing = act.load_state_dict(ref.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    return ref, act


def _inputs(bs=2, n=12, padded=True):
    torch.manual_seed(1)
    x = torch.randn(bs, n, C)
    pos = torch.randn(bs, n, C)
    kpm = None
    if padded:
        kpm = torch.zeros(bs, n, dtype=torch.bool)
        kpm[1, n - 4:] = True
    return x, pos, kpm


# ---------------------------------------------------------------- exactness
@pytest.mark.parametrize('batch_first', [True, False])
@pytest.mark.parametrize('combine', ['exact', 'packed'])
def test_singleton_clusters_equal_exact_attention(batch_first, combine):
    # tiny buckets: every token is its own cluster
    ref, act = _pair(
        batch_first, num_hashes=8, bucket_width=1e-4, hash_combine=combine)
    x, pos, kpm = _inputs()
    if not batch_first:
        x, pos = x.transpose(0, 1), pos.transpose(0, 1)
    out_ref = ref(x, x, x, query_pos=pos, key_padding_mask=kpm)
    out = act(x, x, x, query_pos=pos, key_padding_mask=kpm)
    assert (act.last_num_prototypes == 12).all()  # really all singletons
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=0)


def test_default_hashing_with_32_rounds_separates_spread_tokens():
    # the release's hashing (r=8, packed, L=32) on well-separated tokens:
    # every token its own cluster -> exact attention
    ref, act = _pair(num_hashes=32, seed=0)
    x, pos, kpm = _inputs()
    x = 10 * x
    out = act(x, query_pos=pos, key_padding_mask=kpm)
    assert (act.last_num_prototypes == 12).all()
    torch.testing.assert_close(
        out, ref(x, query_pos=pos, key_padding_mask=kpm), atol=1e-5, rtol=0)


def test_disabled_is_exactly_mmcv_attention():
    ref, act = _pair(enabled=False)
    x, pos, kpm = _inputs()
    assert torch.equal(
        act(x, x, x, query_pos=pos, key_padding_mask=kpm),
        ref(x, x, x, query_pos=pos, key_padding_mask=kpm))
    # also in train mode (dropout): same RNG stream, same numbers
    ref.train(), act.train()
    torch.manual_seed(5)
    a = act(x, query_pos=pos, key_padding_mask=kpm)
    torch.manual_seed(5)
    b = ref(x, query_pos=pos, key_padding_mask=kpm)
    assert torch.equal(a, b)


def test_key_clustering_singletons_equal_exact_attention():
    ref, act = _pair(
        group_k=True, num_hashes=8, k_hashes=8, bucket_width=1e-4,
        hash_combine='exact')
    x, pos, kpm = _inputs()
    out = act(x, x, x, query_pos=pos, key_padding_mask=kpm)
    torch.testing.assert_close(
        out, ref(x, x, x, query_pos=pos, key_padding_mask=kpm),
        atol=1e-5, rtol=0)
    # key clusters = valid keys + one sentinel cluster for padded keys
    assert act.last_num_key_clusters[0].tolist() == [12] * H
    assert act.last_num_key_clusters[1].tolist() == [9] * H


def test_key_clustering_weights_clusters_by_size():
    # duplicated keys: clustered keys weighted by their counts equal the
    # dense softmax over the duplicates
    ref, act = _pair(group_q=False, group_k=True, k_hashes=8,
                     bucket_width=1e-4, hash_combine='exact')
    torch.manual_seed(2)
    q = torch.randn(1, 5, C)
    k = torch.randn(1, 3, C).repeat_interleave(
        torch.tensor([1, 2, 4]), dim=1)
    out = act(q, k, k)
    assert act.last_num_key_clusters.tolist() == [[3] * H]
    torch.testing.assert_close(out, ref(q, k, k), atol=1e-5, rtol=0)


# --------------------------------------------------------------- clustering
def _reference_ada_cluster(hashes):
    """Sequential walk over the sorted tokens, as the CUDA kernel does."""
    rows, n = hashes.shape
    groups = np.zeros((rows, n), dtype=np.int64)
    counts = []
    for r in range(rows):
        order = np.argsort(hashes[r], kind='stable')
        cid = 0
        cnt = [0]
        for j, t in enumerate(order):
            if j > 0 and hashes[r, t] != hashes[r, order[j - 1]]:
                cid += 1
                cnt.append(0)
            groups[r, t] = cid
            cnt[cid] += 1
        counts.append(cnt)
    kmax = max(len(c) for c in counts)
    out = np.zeros((rows, kmax), dtype=np.int64)
    for r, c in enumerate(counts):
        out[r, :len(c)] = c
    return groups, out


@pytest.mark.parametrize('high', [3, 40, 2**40])
def test_cluster_ids_match_reference_semantics(high):
    g = torch.Generator().manual_seed(high % 1000)
    hashes = torch.randint(0, high, (6, 50), generator=g)
    groups, counts = cluster_ids(hashes)
    ref_groups, ref_counts = _reference_ada_cluster(hashes.numpy())
    assert torch.equal(groups, torch.from_numpy(ref_groups))
    assert torch.equal(counts, torch.from_numpy(ref_counts))
    assert (counts.sum(1) == 50).all()
    # ascending hash order: ids are ordered exactly as the hash values
    dh = torch.sign(hashes[:, :, None] - hashes[:, None, :])
    dg = torch.sign(groups[:, :, None] - groups[:, None, :])
    assert torch.equal(dh, dg)


def test_cluster_ids_exact_tuples_and_padding_sentinel():
    codes = torch.tensor([[[0, 1], [2, 0], [0, 1], [1, 1], [2, 0]]])
    groups, counts = cluster_ids(codes)
    # distinct tuples (0,1) (2,0) (1,1): ordered with the last round most
    # significant: (2,0) < (0,1) < (1,1)
    assert groups.tolist() == [[1, 0, 1, 2, 0]]
    assert counts.tolist() == [[2, 2, 1]]
    pad = torch.tensor([[False, False, False, True, True]])
    groups, counts = cluster_ids(codes, pad)
    # padded tokens: one cluster after every valid one, never shared
    assert groups.tolist() == [[1, 0, 1, 2, 2]]
    assert counts.tolist() == [[1, 2, 2]]


def test_e2lsh_codes_and_packing_match_numpy():
    torch.manual_seed(3)
    x = torch.randn(3, 20, 8)
    proj = torch.randn(8, 6)
    off = torch.rand(6)
    codes = e2lsh_codes(x.half(), proj, off, 8.0)  # half in, fp32 inside
    xn = x.half().float().numpy()
    ref = np.floor((xn @ proj.numpy() + off.numpy()) / 8.0).astype(np.int64)
    ref = ref - ref.min(axis=1, keepdims=True)
    assert torch.equal(codes, torch.from_numpy(ref))
    packed = pack_codes(codes, 2)
    ref_packed = sum(ref[..., i] * 4**i for i in range(6))
    assert torch.equal(packed, torch.from_numpy(ref_packed))


def test_num_hashes_is_honoured(monkeypatch):
    seen = []
    orig = act_mod.sample_projections

    def spy(dims, rounds, *args, **kwargs):
        seen.append((dims, rounds))
        return orig(dims, rounds, *args, **kwargs)

    monkeypatch.setattr(act_mod, 'sample_projections', spy)
    for L in (16, 20):
        _, act = _pair(num_hashes=L)
        x, pos, _ = _inputs(padded=False)
        act(x, query_pos=pos)
        assert seen[-1] == (C // H, L)


def test_prototypes_fall_when_tokens_are_duplicated():
    _, act = _pair(num_hashes=16, bucket_width=1e-3, hash_combine='exact')
    torch.manual_seed(4)
    x = torch.randn(1, 24, C)
    act(x)
    assert (act.last_num_prototypes == 24).all()
    dup = x[:, :6].repeat(1, 4, 1)  # 6 distinct tokens, each 4 times
    act(dup)
    assert (act.last_num_prototypes <= 6).all()
    # the default (release) hashing merges near-identical tokens too
    _, act = _pair()
    act(x)
    k_rand = act.last_num_prototypes.float().mean()
    act(dup)
    assert act.last_num_prototypes.float().mean() < k_rand
    assert (act.last_num_prototypes <= 6).all()


# ---------------------------------------------------------------- gradients
def test_mean_and_broadcast_gradients_equal_dense():
    torch.manual_seed(5)
    rows, n, d, K = 3, 10, 4, 4
    groups = torch.randint(0, K, (rows, n))
    groups[:, :K] = torch.arange(K)  # no empty cluster
    counts = torch.zeros(rows, K, dtype=torch.long).scatter_add_(
        1, groups, torch.ones_like(groups))
    x = torch.randn(rows, n, d, requires_grad=True)
    w = torch.randn(d, d)
    y = broadcast(torch.tanh(cluster_means(x, groups, counts) @ w), groups)
    gy = torch.randn_like(y)
    gx, = torch.autograd.grad(y, x, gy)
    # dense: one-hot assignment matrix
    x2 = x.detach().clone().requires_grad_(True)
    A = torch.nn.functional.one_hot(groups, K).float()  # (rows, n, K)
    P = A.transpose(1, 2) @ x2 / counts[..., None].float()
    y2 = A @ torch.tanh(P @ w)
    gx2, = torch.autograd.grad(y2, x2, gy)
    torch.testing.assert_close(y, y2)
    torch.testing.assert_close(gx, gx2)


def test_act_attention_gradients_equal_dense_with_same_clusters():
    _, act = _pair(num_hashes=4)
    act.train()
    act.attn.dropout = 0.0
    x, pos, kpm = _inputs()
    fixed = {}
    orig = act._cluster

    def keep(z, rounds, pad, gen, **kwargs):
        fixed['gc'] = orig(z, rounds, pad, gen, **kwargs)
        return fixed['gc']

    act._cluster = keep
    out = act(x, query_pos=pos, key_padding_mask=kpm)
    gout = torch.randn_like(out)
    grads = torch.autograd.grad(out, [act.attn.in_proj_weight], gout)[0]
    groups, counts = fixed['gc']
    K = counts.shape[1]
    # dense recomputation with the same clusters
    w, b = act.attn.in_proj_weight, act.attn.in_proj_bias
    q, k, v = (torch.nn.functional.linear(t, wi, bi) for t, wi, bi in zip(
        (x + pos, x + pos, x), w.split(C), b.split(C)))
    d = C // H

    def heads(t):
        return t.view(2, 12, H, d).transpose(1, 2).reshape(2 * H, 12, d)

    q, k, v = heads(q) * d**-0.5, heads(k), heads(v)
    A = torch.nn.functional.one_hot(groups, K).float()
    P = A.transpose(1, 2) @ q / counts.clamp(min=1)[..., None].float()
    s = P @ k.transpose(1, 2)
    mask = kpm[:, None, None].expand(2, H, 1, 12).reshape(2 * H, 1, 12)
    o = A @ (s.masked_fill(mask, float('-inf')).softmax(-1) @ v)
    o = o.view(2, H, 12, d).transpose(1, 2).reshape(2, 12, C)
    ref = x + act.attn.out_proj(o)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    gref = torch.autograd.grad(ref, [w], gout)[0]
    torch.testing.assert_close(grads, gref, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------- misc
def test_padding_sentinel_keeps_valid_tokens_independent_of_padding():
    _, act = _pair(cluster_padding=False, seed=3)
    x, pos, kpm = _inputs()
    out = act(x, query_pos=pos, key_padding_mask=kpm)
    x2 = x.clone()
    x2[1, 8:] = 100 * torch.randn(4, C)  # change padded tokens only
    out2 = act(x2, query_pos=pos, key_padding_mask=kpm)
    torch.testing.assert_close(out[1, :8], out2[1, :8])
    torch.testing.assert_close(out[0], out2[0])


def test_hashing_stays_fp32_under_autocast():
    _, act = _pair(seed=0)
    x, pos, kpm = _inputs()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = act(x, query_pos=pos, key_padding_mask=kpm)
    assert torch.isfinite(out.float()).all()


def test_flop_count_hand_computed_on_known_clusters():
    # 1 image, 12 tokens = 3 distinct tokens x 4, C=32, 4 heads (d=8), L=4;
    # tiny buckets: exactly 3 prototypes per head
    _, act = _pair(num_hashes=4, bucket_width=1e-4, hash_combine='exact')
    torch.manual_seed(6)
    x = torch.randn(1, 3, C).repeat(1, 4, 1)
    out = act(x)
    assert act.last_num_prototypes.tolist() == [[3, 3, 3, 3]]
    # projections: q,k,v 3 x 12 x 32 x 32 = 36864, out 12 x 32 x 32 = 12288
    # hashing 4 heads x 12 x 8 x 4 = 1536, means 4 x 12 x 8 = 384
    # prototype attention 4 heads x 3 protos x 12 keys x 8 x 2 = 2304
    assert act.flop_count((x, ), {}, out) == 36864 + 12288 + 1536 + 384 + 2304
    act.enabled = False
    # dense: 4 heads x 12 x 12 x 8 x 2 = 9216
    assert act.flop_count((x, ), {}, act(x)) == 36864 + 12288 + 9216
    # the toolkit protocol: flop_count reads the call's own args
    assert hasattr(ACTAttention, 'flop_count')


def test_records_prototypes_and_running_fraction():
    _, act = _pair(num_hashes=4, bucket_width=1e-4, hash_combine='exact')
    torch.manual_seed(6)
    x = torch.randn(1, 3, C).repeat(1, 4, 1)
    act(x)
    act(torch.randn(1, 12, C))
    assert act.num_calls == 2
    assert act.prototype_fraction() == pytest.approx((3 + 12) / 24)
    act.reset_stats()
    assert act.num_calls == 0 and act.last_num_prototypes is None


@pytest.mark.parametrize('kwargs,key', [
    (dict(hash_combine='tuple'), 'hash_combine'),
    (dict(num_hashes=0), 'num_hashes'),
    (dict(num_hashes=40), 'num_hashes'),
    (dict(offset_range='x'), 'offset_range'),
    (dict(bucket_width=0), 'bucket_width'),
])
def test_bad_config_fails_at_build_naming_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        MODELS.build(dict(type='ACTAttention', embed_dims=C, num_heads=H,
                          **kwargs))


def test_offset_range_r_draws_textbook_offsets(monkeypatch):
    seen = []
    orig = act_mod.sample_projections

    def spy(dims, rounds, offset_range, *args):
        seen.append(offset_range)
        return orig(dims, rounds, offset_range, *args)

    monkeypatch.setattr(act_mod, 'sample_projections', spy)
    _, act = _pair(offset_range='r', bucket_width=4.0)
    act(torch.randn(1, 5, C))
    assert seen == [4.0]


# ---------------------------------------------------------------- detector
def _tiny_act_detr(L=32, **act_cfg):
    cfg = load_config(f'act/act-l{L}_r18-tiny-dc5_1xb4-12e_shapes.py').model
    cfg.act_cfg.update(act_cfg)
    return cfg


def test_detr_state_dict_loads_and_seeded_eval_is_reproducible():
    cfg = _tiny_act_detr(seed=7)
    assert cfg.type == 'ACTDETR'
    detr_cfg = copy.deepcopy(cfg)
    detr_cfg.type = 'DETR'  # mmdet's own detector
    detr_cfg.pop('act_cfg')
    detr_cfg.encoder.layer_cfg.self_attn_cfg.pop('type', None)
    torch.manual_seed(0)
    detr = MODELS.build(detr_cfg)
    detr.init_weights()
    model = MODELS.build(cfg)
    res = model.load_state_dict(detr.state_dict(), strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    assert set(model.state_dict()) == set(detr.state_dict())
    layers = model.act_layers()
    assert len(layers) == 2 and [m.seed for m in layers] == [7, 8]
    assert all(m.num_hashes == 32 for m in layers)
    model.eval(), detr.eval()
    torch.manual_seed(1)
    inputs = torch.rand(2, 3, 96, 128)
    samples = det_samples([(96, 128), (80, 100)])
    with torch.no_grad():
        a = model._forward(inputs, copy.deepcopy(samples))
        torch.manual_seed(123)  # the global RNG does not matter with a seed
        b = model._forward(inputs, copy.deepcopy(samples))
        assert all(torch.equal(u, v) for u, v in zip(a, b))
        # ACT off: exactly the DETR checkpoint's outputs
        with act_enabled(model, False):
            c = model._forward(inputs, copy.deepcopy(samples))
        ref = detr._forward(inputs, copy.deepcopy(samples))
        assert all(torch.equal(u, v) for u, v in zip(c, ref))
    assert all(m.enabled for m in layers)  # restored
    stats = model.prototype_stats()
    assert set(stats) == {'layer0', 'layer1'}
    assert all(0 < v <= 1 for v in stats.values())


def test_act_detr_rejects_another_encoder_attention():
    cfg = _tiny_act_detr()
    cfg.encoder.layer_cfg.self_attn_cfg.type = 'MultiheadAttention'
    with pytest.raises(ValueError, match='self_attn_cfg.type'):
        MODELS.build(cfg)


def test_analysis_toolkit_counts_act_with_its_flop_count():
    from efficient_detr_mm.analysis.flops import count_detector_flops
    cfg = _tiny_act_detr(L=16, seed=0)
    detr_cfg = copy.deepcopy(cfg)  # (mmdet's head edits its config)
    model = MODELS.build(cfg).eval()
    detr_cfg.type = 'EffDETR'
    detr_cfg.pop('act_cfg')
    detr_cfg.encoder.layer_cfg.self_attn_cfg.pop('type', None)
    detr = MODELS.build(detr_cfg).eval()
    detr.load_state_dict(model.state_dict())
    inputs = torch.rand(1, 3, 96, 128)
    samples = det_samples([(96, 128)])
    res_act = count_detector_flops(model, inputs, samples)
    res_detr = count_detector_flops(detr, inputs, samples)
    assert res_act.override_calls['ACTAttention'] == 2
    n, c, h, L = 6 * 8, 128, 8, 16  # stride-16 tokens of a 96 x 128 image
    saved = 0
    for m in model.act_layers():
        k = m.last_num_prototypes.sum().item()  # prototypes over heads
        # dense QK^T + AV minus prototype attention, hashing and means
        saved += 2 * n * n * c - 2 * k * n * (c // h) - n * c * (L + 1)
    assert res_detr.by_part['encoder'] - res_act.by_part['encoder'] == saved
    assert res_act.by_part['backbone'] == res_detr.by_part['backbone']
