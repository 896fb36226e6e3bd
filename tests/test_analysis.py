"""FLOP counter (hand-computed cases, override protocol, MSDA on the CPU and
the CUDA-op path) and smoke tests of get_flops.py / benchmark.py."""
import json
import math
import os.path as osp
import warnings

import mmcv.ops.multi_scale_deform_attn as msda_mod
import pytest
import torch
from helpers import REPO, python_tool
from mmcv.ops import MultiScaleDeformableAttention
from mmdet.registry import MODELS
from torch import nn

from efficient_detr_mm.analysis import (FlopCounter, count_detector_flops,
                                        count_flops)
from efficient_detr_mm.analysis.inputs import (build_detector, load_config,
                                               preprocess, synthetic_images)

TINY_DINO = 'configs/dino/dino-4scale_r18-tiny_1xb4-12e_shapes.py'
TINY_DDETR = ('configs/deformable_detr/'
              'deformable-detr-refine-twostage_r18-tiny_1xb4-12e_shapes.py')


def test_linear_layer():
    lin = nn.Linear(8, 16)
    res = count_flops(lin, torch.randn(2, 5, 8))
    assert res.total == 2 * 5 * 8 * 16  # one MAC per weight per vector
    assert res.by_op['linear'] == res.total
    assert res.by_part['other'] == res.total


def test_grid_sample_and_broadcast_matmul():

    class M(nn.Module):

        def forward(self, x, grid, a, b):
            s = nn.functional.grid_sample(x, grid, align_corners=False)
            return s, torch.matmul(a, b)

    x, grid = torch.randn(2, 3, 5, 6), torch.rand(2, 4, 7, 2) * 2 - 1
    a, b = torch.randn(5, 4), torch.randn(3, 4, 6)  # broadcast on the left
    res = count_flops(M(), x, grid, a, b)
    assert res.by_op['grid_sampler'] == 4 * 2 * 3 * 4 * 7  # 4 per output
    assert res.by_op['matmul'] == 3 * 5 * 6 * 4


# ---------------------------------------------------------------- MSDA
C, HEADS, LEVELS, POINTS = 32, 4, 2, 3
SHAPES = [(4, 5), (2, 3)]
BS, NQ = 2, 7
NV = sum(h * w for h, w in SHAPES)


def _msda_call(batch_first=True):
    torch.manual_seed(0)
    m = MultiScaleDeformableAttention(
        embed_dims=C,
        num_heads=HEADS,
        num_levels=LEVELS,
        num_points=POINTS,
        batch_first=batch_first).eval()
    q, v = torch.randn(BS, NQ, C), torch.randn(BS, NV, C)
    if not batch_first:
        q, v = q.transpose(0, 1), v.transpose(0, 1)
    shapes = torch.tensor(SHAPES)
    kw = dict(
        query=q,
        value=v,
        reference_points=torch.rand(BS, NQ, LEVELS, 2),
        spatial_shapes=shapes,
        level_start_index=torch.tensor([0, SHAPES[0][0] * SHAPES[0][1]]))
    return m, kw


# hand count, one MSDA call: value_proj on every value token, offsets /
# weights / output projections on every query, then per query, head, level
# and point one bilinear sample of C / HEADS channels (4 MACs each) and its
# weighting (1 MAC each)
MSDA_LINEAR = (BS * NV * C * C + BS * NQ * C * (HEADS * LEVELS * POINTS * 2) +
               BS * NQ * C * (HEADS * LEVELS * POINTS) + BS * NQ * C * C)
MSDA_CORE = BS * NQ * HEADS * LEVELS * POINTS * (C // HEADS) * (4 + 1)


@pytest.mark.parametrize('batch_first', [True, False])
def test_msda_one_call(batch_first):
    m, kw = _msda_call(batch_first)
    res = count_flops(m, **kw)
    assert res.total == MSDA_LINEAR + MSDA_CORE
    assert res.override_calls['MultiScaleDeformableAttention'] == 1
    # the CPU trace alone sees the 4 bilinear MACs but not the weighting
    plain = FlopCounter(m, use_overrides=False).count(**kw)
    assert plain.by_op['grid_sampler'] == MSDA_CORE * 4 // 5
    assert plain.total == MSDA_LINEAR + MSDA_CORE * 4 // 5


_MSDA_PYTORCH = msda_mod.multi_scale_deformable_attn_pytorch


class MultiScaleDeformableAttnFunction(torch.autograd.Function):
    """CPU stand-in of mmcv's CUDA op: same name and inputs, so the trace
    records ``prim::PythonOp.MultiScaleDeformableAttnFunction`` with the
    ops inside hidden, exactly as on CUDA."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index,
                sampling_locations, attention_weights, im2col_step):
        return _MSDA_PYTORCH(
            value, spatial_shapes, sampling_locations, attention_weights)


def test_msda_cpu_path_equals_cuda_op_path(monkeypatch):
    m, kw = _msda_call()
    cpu = count_flops(m, **kw)
    assert 'grid_sampler' in cpu.dropped  # the CPU core was traced
    ref_out = m(**kw)

    def cuda_like(value, spatial_shapes, sampling_locations,
                  attention_weights):
        sizes = spatial_shapes.prod(1)
        start = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        return MultiScaleDeformableAttnFunction.apply(
            value, spatial_shapes, start, sampling_locations,
            attention_weights, 64)

    # MSDA's forward now reaches the core through the op, as on CUDA
    monkeypatch.setattr(msda_mod, 'multi_scale_deformable_attn_pytorch',
                        cuda_like)
    torch.testing.assert_close(m(**kw), ref_out)
    # trace only: linears + the op's registered handle
    op_path = FlopCounter(m, use_overrides=False).count(**kw)
    assert op_path.by_op['PythonOp.MultiScaleDeformableAttnFunction'] == \
        MSDA_CORE
    assert 'grid_sampler' not in op_path.by_op
    assert op_path.total == cpu.total
    # default counter on the op path (built-in module override)
    assert count_flops(m, **kw).total == cpu.total


def test_msda_subclass_with_own_forward_falls_back_to_trace():

    class Custom(MultiScaleDeformableAttention):

        def forward(self, query, **kwargs):
            return super().forward(query, **kwargs)

    torch.manual_seed(0)
    m, kw = _msda_call()
    c = Custom(
        embed_dims=C,
        num_heads=HEADS,
        num_levels=LEVELS,
        num_points=POINTS,
        batch_first=True).eval()
    c.load_state_dict(m.state_dict())
    with pytest.warns(UserWarning, match='no flop_count'):
        res = count_flops(c, **kw)
    # the parent forward runs inside the subclass call: the built-in
    # override is not applied to a replaced forward
    assert res.total == MSDA_LINEAR + MSDA_CORE * 4 // 5


# ------------------------------------------------------ override protocol
class _Special(nn.Module):
    """Stand-in paper module: its real work is invisible to the trace."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.inner = _Inner()

    def forward(self, x, *, scale=1.0):
        return self.inner(self.proj(x) * scale)

    def flop_count(self, args, kwargs, output):
        (x, ) = args
        return 1000 * x.shape[0] + int(kwargs['scale'])


class _Inner(nn.Module):

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x)

    def flop_count(self, args, kwargs, output):
        raise AssertionError('nested override must not be used')


class _ToyDetector(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.encoder = _Special()
        self.bbox_head = nn.Sequential(nn.Linear(4, 2))
        self.extra = nn.Linear(4, 3)

    def forward(self, x):
        x = self.backbone(x)
        x = self.encoder(x, scale=3.0) + self.encoder(x, scale=5.0)
        return self.bbox_head.forward(x), self.extra(x)  # direct .forward


def test_override_protocol():
    x = torch.randn(6, 4)
    res = count_flops(_ToyDetector(), x)
    assert res.by_part['backbone'] == 6 * 4 * 4
    # two calls, each its own override with its kwargs; the traced linears
    # inside (proj, inner.lin) are dropped, the nested override unused
    assert res.by_part['encoder'] == (6000 + 3) + (6000 + 5)
    assert res.override_calls['_Special'] == 2
    assert res.dropped['linear'] == 2 * 2 * 6 * 4 * 4
    # a part called as ``part.forward(...)`` is still attributed to it
    assert res.by_part['head'] == 6 * 4 * 2
    assert res.by_part['other'] == 6 * 4 * 3
    assert res.total == sum(v for k, v in res.by_part.items()
                            if k != 'total')
    plain = FlopCounter(_ToyDetector(), use_overrides=False).count(x)
    assert plain.by_part['encoder'] == 2 * 2 * 6 * 4 * 4


def test_act_attention_uses_its_flop_count():
    if 'ACTAttention' not in MODELS.module_dict:
        pytest.skip('ACTAttention not registered')
    attn = MODELS.build(
        dict(
            type='ACTAttention',
            embed_dims=16,
            num_heads=2,
            batch_first=True,
            num_hashes=4,
            seed=0)).eval()
    x = torch.randn(2, 12, 16).repeat_interleave(2, dim=1)  # duplicates
    res = count_flops(attn, x)
    assert res.override_calls['ACTAttention'] == 1
    assert res.dropped  # its traced ops were replaced
    with torch.no_grad():
        out = attn(x)
    assert res.total == attn.flop_count((x, ), {}, out)


def test_kd_attention_uses_its_flop_count():
    if 'KDAttention' not in MODELS.module_dict:
        pytest.skip('KDAttention not registered')
    _, kw = _msda_call()
    kda = MODELS.build(
        dict(
            type='KDAttention',
            embed_dims=C,
            num_heads=HEADS,
            num_levels=LEVELS,
            num_points=POINTS,
            batch_first=True)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)  # no trace fallback
        res = count_flops(kda, **kw)
    assert res.override_calls == {'KDAttention': 1}
    assert 'grid_sampler' in res.dropped  # its traced core was replaced
    with torch.no_grad():
        out = kda(**kw)
    assert res.total == kda.flop_count((), kw, out)


# -------------------------------------------------- DINO encoder formula
def _ceil_half(n, times):
    for _ in range(times):
        n = math.ceil(n / 2)
    return n


def test_small_dino_encoder_matches_hand_formula():
    cfg = load_config(osp.join(REPO, TINY_DINO))
    model = build_detector(cfg)
    h, w = 96, 160
    data = preprocess(model, synthetic_images((h, w)))
    res = count_detector_flops(model, data['inputs'], data['data_samples'])
    # ResNet strides 8 / 16 / 32 (conv1, max-pool, 3 strided stages, each
    # ceil-halving) plus the neck's extra stride-2 level
    sizes = [(_ceil_half(h, k), _ceil_half(w, k)) for k in (3, 4, 5, 6)]
    n = sum(a * b for a, b in sizes)
    enc = cfg.model.encoder
    c = enc.layer_cfg.self_attn_cfg.embed_dims
    ffn = enc.layer_cfg.ffn_cfg.feedforward_channels
    heads, levels, points = 8, 4, 4  # mmcv MSDA defaults kept by the config
    per_token = (
        c * c  # value_proj
        + c * heads * levels * points * 2  # sampling_offsets
        + c * heads * levels * points  # attention_weights
        + 5 * c * levels * points  # bilinear sampling + weighting
        + c * c  # output_proj
        + 2 * c * ffn  # FFN
        + 2 * 5 * c)  # two LayerNorms, fvcore counts 5 per element
    assert res.by_part['encoder'] == enc.num_layers * n * per_token
    assert res.override_calls['MultiScaleDeformableAttention'] == \
        enc.num_layers + cfg.model.decoder.num_layers
    assert all(res.by_part[k] > 0 for k in res.by_part)


# ---------------------------------------------------------------- tools
def test_get_flops_tool(tmp_path):
    import mmcv
    import numpy as np
    rng = np.random.default_rng(0)
    imgs = []
    for k, (h, w) in enumerate([(96, 128), (80, 72)]):
        imgs.append(str(tmp_path / f'{k}.png'))
        mmcv.imwrite(rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
                     imgs[-1])
    out = tmp_path / 'flops.json'
    proc = python_tool('tools/analysis_tools/get_flops.py', TINY_DINO,
                       '--img', *imgs, '--out', str(out))
    rows = ('backbone', 'neck', 'encoder', 'decoder', 'head', 'other',
            'total')
    for row in rows:
        assert f'\n{row} ' in proc.stdout
    rec = json.loads(out.read_text())
    per = rec['per_image']
    assert [p['img_shape'] for p in per] == [[96, 128], [80, 72]]
    assert per[0]['flops']['encoder'] > per[1]['flops']['encoder'] > 0
    for row in rows:  # the table is the mean over the images
        assert rec['flops'][row] == round(
            (per[0]['flops'][row] + per[1]['flops'][row]) / 2)
    for p in per:
        f = p['flops']
        assert f['total'] == sum(v for k, v in f.items() if k != 'total')


def test_benchmark_tool_two_configs(tmp_path):
    out = tmp_path / 'bench.json'
    proc = python_tool('tools/analysis_tools/benchmark.py', TINY_DINO,
                       TINY_DDETR, '--shape', '96', '128', '--warmup', '1',
                       '--repeats', '2', '--breakdown', '--out', str(out))
    assert '[round 2/2]' in proc.stdout  # progress
    assert 'ratio' in proc.stdout and 'stage breakdown' in proc.stdout
    rec = json.loads(out.read_text())
    res = rec['results']
    assert [r['name'] for r in res] == [
        osp.splitext(osp.basename(p))[0] for p in (TINY_DINO, TINY_DDETR)
    ]
    assert res[0]['ratio'] == 1.0
    for r in res:
        assert len(r['latencies_ms']) == 2
        lat = r['latency_ms']
        assert lat['min'] <= lat['q1'] <= lat['median'] <= lat['q3'] <= \
            lat['max']
        assert r['peak_mem_mib'] > 0
        assert set(r['stages_ms']) == {
            'backbone+neck', 'encoder', 'query selection', 'decoder',
            'head+post', 'other'
        }
