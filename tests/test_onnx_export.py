"""ONNX export (efficient_detr_mm/deployment, tools/deployment/pytorch2onnx.py)
of every model family: ONNX Runtime gives PyTorch's detections on real
synthetic-shapes images, the graph holds standard operators only, bad input
fails clearly.

Every tiny shapes config of the package is exported (22 configs; the ACT
ones differ only in hash rounds, and exporting L32 found an ONNX Runtime
int64 reduction that changed every packed hash).
"""
import glob
import importlib.util
import os.path as osp

import numpy as np
import pytest
import torch
from helpers import REPO

from efficient_detr_mm.analysis.inputs import make_batch
from efficient_detr_mm.datasets.shapes import generate_split
from efficient_detr_mm.deployment import (check_input_shape,
                                          compare_detections, export_and_check,
                                          input_image, load_export_model,
                                          op_types)

SHAPE = (128, 160)
ATOL = 1e-3

#: operators the graph must contain, by config folder: deformable sampling
#: as GridSample, Focus-DETR's token selection, ACT's data-dependent number
#: of clusters (NonZero)
FAMILY_OPS = {
    'deformable_detr': ('GridSample', ),
    'dino': ('GridSample', ),
    'focus_detr': ('GridSample', 'TopK', 'ScatterElements'),
    'lite_detr': ('GridSample', ),
    'act': ('NonZero', ),
}
#: every tiny synthetic-shapes config of the package, with its operators
CONFIGS = [(osp.relpath(p, osp.join(REPO, 'configs')),
            FAMILY_OPS.get(osp.basename(osp.dirname(p)), ()))
           for p in sorted(glob.glob(osp.join(REPO, 'configs', '*',
                                              '*_shapes.py')))]


def cfg_path(rel):
    return osp.join(REPO, 'configs', rel)


@pytest.fixture(scope='module')
def shapes_images(tmp_path_factory):
    """Two real synthetic-shapes images (val split, 160-224 px)."""
    root = str(tmp_path_factory.mktemp('shapes'))
    generate_split(root, 'val', 2, img_size=(160, 224), seed=3)
    return [osp.join(root, 'val', f'{i:06d}.jpg') for i in range(2)]


@pytest.mark.parametrize('config,ops', CONFIGS, ids=[c for c, _ in CONFIGS])
def test_export_matches_pytorch(config, ops, shapes_images, tmp_path):
    out = str(tmp_path / 'model.onnx')
    res = export_and_check(
        cfg_path(config),
        out,
        SHAPE,
        img_path=shapes_images[0],
        # a second image: sizes that depend on the data were not frozen
        check_images=[input_image(SHAPE, shapes_images[1])],
        atol=ATOL,
        log=lambda msg: None)
    assert res['custom_ops'] == []
    for cmp in res['comparisons']:
        assert cmp['num'] >= 10
        assert cmp['max_score_diff'] <= ATOL, cmp
        assert cmp['max_box_diff'] <= ATOL, cmp
        assert cmp['top_labels_agree'], cmp
        assert cmp['top_labels_out'] == cmp['top_labels_ref'], cmp
    assert res['ok']
    types = op_types(out)
    for op in ops:
        assert op in types, (op, types)
    # no random operator, no mmcv op (the deformable CUDA kernel)
    assert not {'RandomNormal', 'RandomUniform', 'RandomNormalLike'} & set(
        types)
    assert not any('Deform' in t or 'MMCV' in t for t in types), types
    if config.startswith('act/'):
        assert len(res['act_seeds']) == 2  # one per encoder layer, fixed
    else:
        assert res['act_seeds'] == []


def test_wrapper_is_mmdet_predict():
    """The exported function is the detector's ordinary test-time path:
    the preprocessor on the uint8 image, then predict (boxes, scores,
    labels of pred_instances)."""
    wrapper = load_export_model(
        cfg_path('dino/dino-4scale_r18-tiny_1xb4-12e_shapes.py'), SHAPE)
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, ) + SHAPE, generator=g,
                        dtype=torch.uint8)
    model = wrapper.model
    with torch.no_grad():
        data = model.data_preprocessor(make_batch([img]), False)
        ref = model.predict(data['inputs'], data['data_samples'])
        boxes, scores, labels = wrapper(img.float()[None])
    ref = ref[0].pred_instances
    torch.testing.assert_close(boxes, ref.bboxes)
    torch.testing.assert_close(scores, ref.scores)
    assert torch.equal(labels, ref.labels)


def _detections(n=20, seed=0):
    rng = np.random.default_rng(seed)
    scores = np.sort(rng.uniform(0, 1, n))[::-1].astype(np.float32)
    boxes = rng.uniform(0, 100, (n, 4)).astype(np.float32)
    labels = rng.integers(0, 6, n)
    return dict(boxes=boxes, scores=scores.copy(), labels=labels)


def test_compare_detections_flags_differences():
    ref = _detections()
    same = {k: v.copy() for k, v in ref.items()}
    assert compare_detections(ref, same)['ok']
    moved = {k: v.copy() for k, v in ref.items()}
    moved['boxes'][3, 1] += 0.01
    res = compare_detections(ref, moved)
    assert not res['ok'] and res['max_box_diff'] == pytest.approx(0.01, 1e-3)
    relabel = {k: v.copy() for k, v in ref.items()}
    relabel['labels'][0] = (relabel['labels'][0] + 1) % 6
    res = compare_detections(ref, relabel)
    assert not res['ok'] and not res['top_labels_agree']
    rescored = {k: v.copy() for k, v in ref.items()}
    rescored['scores'][5] -= 0.01
    assert not compare_detections(ref, rescored)['ok']
    # two tied scores in swapped order: the same detections
    tied = {k: v.copy() for k, v in ref.items()}
    tied['scores'][4] = tied['scores'][3]
    ref_tied = {k: v.copy() for k, v in tied.items()}
    for k in ('boxes', 'labels'):
        tied[k][[3, 4]] = tied[k][[4, 3]]
    assert compare_detections(ref_tied, tied)['ok']


def _tool():
    path = osp.join(REPO, 'tools', 'deployment', 'pytorch2onnx.py')
    spec = importlib.util.spec_from_file_location('pytorch2onnx', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tool_reports_and_exit_codes(shapes_images, tmp_path, capsys,
                                     monkeypatch):
    tool = _tool()
    out = str(tmp_path / 'detr.onnx')
    cfg = cfg_path('detr/detr_r18-tiny_1xb4-12e_shapes.py')
    assert tool.main([
        cfg, '--shape', '128', '160', '--out', out, '--img', shapes_images[0]
    ]) == 0
    text = capsys.readouterr().out
    assert 'max |score diff|' in text and 'top detections agree' in text
    assert osp.getsize(out) > 0
    # bad input: clear message, status 2
    assert tool.main([
        cfg_path('detr/no_such_config.py'), '--shape', '128', '160',
        '--out', out
    ]) == 2
    assert 'config file not found' in capsys.readouterr().err
    assert tool.main([
        cfg, '--shape', '100', '150', '--out', out, '--cfg-options',
        'model.data_preprocessor.pad_size_divisor=32'
    ]) == 2
    err = capsys.readouterr().err
    assert 'not divisible by' in err and 'pad_size_divisor=32' in err
    assert '128 x 160' in err  # the suggested size

    # a mismatch exits non-zero
    def mismatch(*args, **kwargs):
        cmp = compare_detections(_detections(), _detections(seed=1))
        return dict(comparisons=[cmp], ok=False, custom_ops=[], act_seeds=[])

    monkeypatch.setattr(tool, 'export_and_check', mismatch)
    assert tool.main([cfg, '--shape', '128', '160', '--out', out]) == 1
    assert 'DO NOT agree' in capsys.readouterr().out


def test_shape_checks():
    from mmengine.config import Config
    cfg = Config(dict(model=dict(data_preprocessor=dict(pad_size_divisor=32))))
    assert check_input_shape(cfg, (512, 704)) == (512, 704)
    with pytest.raises(ValueError, match='not divisible'):
        check_input_shape(cfg, (512, 683))
    with pytest.raises(ValueError, match='positive'):
        check_input_shape(cfg, (0, 64))
    with pytest.raises(ValueError, match=r'\(H, W\)'):
        check_input_shape(cfg, (64, ))
    plain = Config(dict(model=dict()))
    assert check_input_shape(plain, (512, 683)) == (512, 683)


def test_unsupported_inputs(tmp_path):
    with pytest.raises(ValueError, match='config file not found'):
        load_export_model(str(tmp_path / 'missing.py'), SHAPE)
    with pytest.raises(ValueError, match='checkpoint file not found'):
        load_export_model(
            cfg_path('detr/detr_r18-tiny_1xb4-12e_shapes.py'), SHAPE,
            checkpoint=str(tmp_path / 'missing.pth'))


@pytest.mark.parametrize('rounds', [16, 32])
def test_exported_hash_packing_is_exact(rounds, tmp_path):
    """ACT's packed hashes (2 bits a round, wrapping in int64) are the same
    in ONNX Runtime: with 32 rounds the terms reach 2**62, where an int64
    ReduceSum of ONNX Runtime was inexact (every hash differed)."""
    import onnxruntime as ort

    from efficient_detr_mm.act import pack_codes

    class Pack(torch.nn.Module):

        def forward(self, codes):
            return pack_codes(codes, 2)

    g = torch.Generator().manual_seed(0)
    codes = torch.randint(-6, 7, (4, 50, rounds), generator=g)
    path = str(tmp_path / 'pack.onnx')
    torch.onnx.export(
        Pack(), (codes, ), path, dynamo=False, opset_version=17,
        input_names=['codes'])
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    out = sess.run(None, {'codes': codes.numpy()})[0]
    np.testing.assert_array_equal(out, Pack()(codes).numpy())
