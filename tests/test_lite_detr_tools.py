"""tools/analysis_tools/visualize_kda.py and its drawing helpers."""
import glob
import json
import os.path as osp

import pytest
import torch
from helpers import python_tool

from efficient_detr_mm.lite_detr import KDAttention
from efficient_detr_mm.visualization.kda import (deform_attention_points,
                                                 nearest_queries)

LITE = 'configs/lite_detr/lite-dino-h3l1-3blk_r18-tiny_1xb4-12e_shapes.py'
DINO = 'configs/dino/dino-4scale_r18-tiny_1xb4-12e_shapes.py'


def test_visualize_kda_vs_msda(shapes_root, tmp_path):
    img = sorted(glob.glob(osp.join(shapes_root, 'val', '*')))[0]
    out, js = str(tmp_path / 'kda.png'), str(tmp_path / 'kda.json')
    python_tool('tools/analysis_tools/visualize_kda.py', LITE,
                '--compare-config', DINO, '--img', img, '--out', out,
                '--json', js, '--points', '64', '48', '20', '30')
    assert osp.getsize(out) > 10000
    with open(js) as f:
        kda, msda = json.load(f)
    assert kda['attention'] == 'KDAttention'
    assert msda['attention'] == 'MultiScaleDeformableAttention'
    for panel in (kda, msda):
        w = torch.tensor(panel['weights'])  # (k, heads, levels, points)
        assert w.shape == (2, 8, 4, 4)
        torch.testing.assert_close(w.sum((-1, -2)), torch.ones(2, 8))
        loc = torch.tensor(panel['locations'])
        assert loc.shape == (2, 8, 4, 4, 2)
    # MSDA at init: uniform weights; KDA: key-dependent, not uniform
    msda_w = torch.tensor(msda['weights'])
    torch.testing.assert_close(msda_w, torch.full_like(msda_w, 1 / 16))
    assert torch.tensor(kda['weights']).std() > 1e-3


def test_deform_attention_points_kda_matches_forward():
    torch.manual_seed(0)
    attn = KDAttention(16, 2, 2, 2, batch_first=True, dropout=0.0).eval()
    with torch.no_grad():
        attn.sampling_offsets.weight.normal_(0, 0.2)
    shapes = torch.tensor([[4, 4], [2, 2]])
    call = dict(
        query=torch.randn(1, 3, 16),
        value=torch.randn(1, 20, 16),
        query_pos=torch.randn(1, 3, 16),
        reference_points=torch.rand(1, 3, 2, 2),
        spatial_shapes=shapes)
    res = deform_attention_points(attn, call)
    assert res['weights'].shape == (1, 3, 2, 2, 2)
    # re-weighting the sampled values with the returned weights gives the
    # module's own output
    q = call['query'] + call['query_pos']
    values, _, _ = attn.sample_and_weigh(q, call['value'], None,
                                         call['reference_points'], shapes)
    w = res['weights'].flatten(-2).permute(0, 2, 1, 3)  # (1, heads, 3, 4)
    out = (values * w[:, :, None]).sum(-1).flatten(1, 2).transpose(1, 2)
    with torch.no_grad():
        expected = attn(
            level_start_index=torch.tensor([0, 16]), **call) - call['query']
    torch.testing.assert_close(attn.output_proj(out), expected)


def test_nearest_queries():
    ref = torch.tensor([[0.1, 0.1], [0.5, 0.5], [0.9, 0.2]])
    ref = ref[None, :, None].expand(1, 3, 4, 2)
    got = nearest_queries(ref, torch.tensor([[0.85, 0.25], [0.4, 0.6]]))
    assert got.tolist() == [2, 1]


def test_draw_sampling_points_writes_png(tmp_path):
    pytest.importorskip('matplotlib')
    import numpy as np

    from efficient_detr_mm.visualization.kda import draw_sampling_points
    panel = dict(
        name='x',
        reference=np.array([[0.5, 0.5]]),
        locations=np.random.rand(1, 2, 3, 2, 2),
        weights=np.full((1, 2, 3, 2), 1 / 6))
    out = str(tmp_path / 'p.png')
    draw_sampling_points(np.zeros((20, 30, 3), np.uint8), [panel], out,
                         (20, 30))
    assert osp.getsize(out) > 1000
