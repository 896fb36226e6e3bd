"""demo/image_demo.py (mmdet's DetInferencer for our configs) and the
detections picture of ``make demo`` (projects/shapes/demo.py), on generated
shapes images with tiny untrained models and checkpoints saved from them."""
import importlib.util
import json
import os.path as osp
import pickle

import mmcv
import numpy as np
import pytest
import torch
from helpers import REPO, config_path
from mmdet.registry import MODELS
from mmengine.config import Config

from efficient_detr_mm.datasets import SHAPES_CLASSES
from efficient_detr_mm.visualization.detections import EffDetInferencer
from efficient_detr_mm.visualization.inputs import load_image

TINY = config_path('dino/dino-4scale_r18-tiny_1xb4-12e_shapes.py')


def load_script(*parts):
    path = osp.join(REPO, *parts)
    spec = importlib.util.spec_from_file_location(
        osp.splitext(parts[-1])[0], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope='module')
def image_demo():
    return load_script('demo', 'image_demo.py')


@pytest.fixture(scope='module')
def tiny_model():
    cfg = Config.fromfile(TINY)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


def save_checkpoint(model, path, dataset_meta=None):
    meta = {} if dataset_meta is None else dict(dataset_meta=dataset_meta)
    torch.save(dict(state_dict=model.state_dict(), meta=meta), str(path))
    return str(path)


@pytest.fixture(scope='module')
def tiny_ckpt(tiny_model, tmp_path_factory):
    return save_checkpoint(
        tiny_model,
        tmp_path_factory.mktemp('ckpt') / 'tiny.pth',
        dict(classes=SHAPES_CLASSES))


@pytest.fixture(scope='module')
def val_image(shapes_root):
    return osp.join(shapes_root, 'val', '000000.jpg')


def test_demo_writes_picture_and_predictions(image_demo, tiny_model,
                                             tiny_ckpt, val_image, tmp_path):
    out = tmp_path / 'out'
    # threshold 0: the untrained model's boxes are drawn too
    image_demo.main([
        val_image, TINY, '--weights', tiny_ckpt, '--out-dir',
        str(out), '--device', 'cpu', '--pred-score-thr', '0'
    ])
    src = mmcv.imread(val_image)
    vis = mmcv.imread(str(out / 'vis' / '000000.jpg'))
    assert vis is not None and vis.shape == src.shape
    # something was drawn on it
    assert np.abs(vis.astype(int) - src.astype(int)).max() > 50

    with open(out / 'preds' / '000000.json') as f:
        pred = json.load(f)
    cfg = Config.fromfile(TINY)
    n = cfg.model.test_cfg.max_per_img
    assert len(pred['labels']) == len(pred['scores']) == \
        len(pred['bboxes']) == n
    assert all(0 <= lab < len(SHAPES_CLASSES) for lab in pred['labels'])
    # the model's own predictions on the same image (built and run here
    # without the demo); boxes in input pixels
    _, batch = load_image(cfg, tiny_model, val_image)
    with torch.no_grad():
        ref = tiny_model.predict(batch['inputs'],
                                 batch['data_samples'])[0].pred_instances
    np.testing.assert_allclose(pred['scores'], ref.scores.numpy(), atol=1e-5)
    np.testing.assert_allclose(pred['bboxes'], ref.bboxes.numpy(), atol=1e-3)
    assert pred['labels'] == ref.labels.tolist()


def test_demo_no_save(image_demo, tiny_ckpt, val_image, tmp_path):
    out = tmp_path / 'out'
    res = image_demo.main([
        val_image, TINY, '--weights', tiny_ckpt, '--out-dir',
        str(out), '--device', 'cpu', '--no-save-vis', '--no-save-pred'
    ])
    assert not out.exists()
    assert len(res['predictions']) == 1


@pytest.mark.parametrize('what', ['image', 'config', 'weights', 'none'])
def test_demo_missing_input_is_named(image_demo, tiny_ckpt, val_image,
                                     tmp_path, capsys, what):
    args = dict(image=val_image, config=TINY, weights=tiny_ckpt)
    if what != 'none':
        args[what] = str(tmp_path / f'missing_{what}')
    argv = [args['image'], args['config']]
    if what != 'none':
        argv += ['--weights', args['weights']]
    with pytest.raises(SystemExit):
        image_demo.main(argv + ['--out-dir', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    if what == 'none':
        assert 'a checkpoint is needed: --weights' in err
    else:
        assert f'missing_{what}' in err and 'not found' in err
    assert not (tmp_path / 'out').exists()


def test_classes_from_checkpoint_else_config(tiny_model, tmp_path):
    names = tuple(f'c{i}' for i in range(len(SHAPES_CLASSES)))
    ckpt = save_checkpoint(tiny_model, tmp_path / 'named.pth',
                           dict(classes=names))
    inf = EffDetInferencer(TINY, ckpt, device='cpu')
    assert tuple(inf.model.dataset_meta['classes']) == names
    # palette: the config's (shapes metainfo)
    assert len(inf.model.dataset_meta['palette']) == len(SHAPES_CLASSES)

    ckpt = save_checkpoint(tiny_model, tmp_path / 'plain.pth')
    inf = EffDetInferencer(TINY, ckpt, device='cpu', palette='random')
    assert tuple(inf.model.dataset_meta['classes']) == SHAPES_CLASSES
    assert inf.model.dataset_meta['palette'] == 'random'

    ckpt = save_checkpoint(tiny_model, tmp_path / 'coco.pth',
                           dict(classes=names[:3]))
    with pytest.raises(ValueError, match='num_classes=6'):
        EffDetInferencer(TINY, ckpt, device='cpu')


def test_checkpoint_of_another_model_is_refused(tiny_model, tmp_path):
    state = tiny_model.state_dict()
    state.pop(next(k for k in state if k.startswith('encoder.')))
    state['not_a_parameter'] = torch.zeros(1)
    path = str(tmp_path / 'other.pth')
    torch.save(dict(state_dict=state), path)
    with pytest.raises(RuntimeError, match='does not fit the model') as e:
        EffDetInferencer(TINY, path, device='cpu')
    assert 'not_a_parameter' in str(e.value)


class _Payload:
    """Pickles to a call that would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_malicious_checkpoint_does_not_run(tmp_path):
    marker = tmp_path / 'ran'
    path = str(tmp_path / 'evil.pth')
    torch.save(dict(state_dict={}, meta=_Payload(str(marker))), path)
    with pytest.raises(pickle.UnpicklingError, match='refused to load'):
        EffDetInferencer(TINY, path, device='cpu')
    assert not marker.exists()


def test_no_weights_needs_explicit_flag():
    with pytest.raises(ValueError, match='no checkpoint given'):
        EffDetInferencer(TINY, None, device='cpu')
    with pytest.raises(FileNotFoundError, match='config file not found'):
        EffDetInferencer('configs/nope.py', None, random_weights=True)


# one tiny config per family: the inferencer builds and runs each
FAMILY_CONFIGS = [
    'detr/detr_r18-tiny_1xb4-12e_shapes.py',
    'deformable_detr/deformable-detr-refine-twostage_r18-tiny_1xb4-12e_shapes.py',  # noqa
    'focus_detr/focus-detr-4scale_r18-tiny_1xb4-12e_shapes.py',
    'lite_detr/lite-dino-h3l1-3blk_r18-tiny_1xb4-12e_shapes.py',
    'lite_detr/lite-deformable-detr-h3l1-3blk_r18-tiny_1xb4-12e_shapes.py',
    'smca/smca_r18-tiny_1xb4-12e_shapes.py',
    'smca/smca-ms_r18-tiny_1xb4-12e_shapes.py',
    'act/act-l16_r18-tiny-dc5_1xb4-12e_shapes.py',
]


@pytest.mark.parametrize('rel', FAMILY_CONFIGS)
def test_every_family_runs(rel, val_image):
    inf = EffDetInferencer(
        config_path(rel), random_weights=True, device='cpu',
        show_progress=False)
    res = inf(val_image, no_save_vis=True, no_save_pred=True)
    pred = res['predictions'][0]
    assert len(pred['scores']) == Config.fromfile(
        config_path(rel)).model.test_cfg.max_per_img
    assert all(0 <= lab < len(SHAPES_CLASSES) for lab in pred['labels'])


def test_coco_config_takes_coco_classes():
    inf = EffDetInferencer(
        config_path('detr/detr_r50_8xb2-150e_coco.py'),
        random_weights=True,
        device='cpu')
    assert len(inf.model.dataset_meta['classes']) == 80
    assert inf.model.dataset_meta['classes'][0] == 'person'


def test_make_demo_picture(tiny_ckpt, shapes_root, tmp_path):
    """The picture step of projects/shapes/demo.py on an untrained
    checkpoint: the first val images with objects side by side, with at
    most ``max_per_image`` boxes drawn on each (none above score 1)."""
    demo = load_script('projects', 'shapes', 'demo.py')
    from efficient_detr_mm.datasets import use_shapes_root
    cfg = use_shapes_root(Config.fromfile(TINY), shapes_root)
    with open(osp.join(shapes_root, 'annotations',
                       'instances_val.json')) as f:
        coco = json.load(f)
    with_objects = {a['image_id'] for a in coco['annotations']}
    files = [
        osp.join(shapes_root, 'val', im['file_name'])
        for im in coco['images'] if im['id'] in with_objects
    ][:2]
    # side by side, tops aligned, 4 white pixels apart
    a, b = (mmcv.imread(f) for f in files)
    expected = np.full((max(a.shape[0], b.shape[0]),
                        a.shape[1] + 4 + b.shape[1], 3), 255, np.uint8)
    expected[:a.shape[0], :a.shape[1]] = a
    expected[:b.shape[0], a.shape[1] + 4:] = b

    out = str(tmp_path / 'val_detections.png')
    drawn = demo.draw_val_detections(
        cfg, tiny_ckpt, out, num_images=2, pred_score_thr=0.0,
        max_per_image=3)
    assert drawn == [3, 3]
    pic = mmcv.imread(out)
    assert pic.shape == expected.shape
    assert np.abs(pic.astype(int) - expected.astype(int)).max() > 50

    drawn = demo.draw_val_detections(
        cfg, tiny_ckpt, out, num_images=2, pred_score_thr=1.0)
    assert drawn == [0, 0]
    np.testing.assert_array_equal(mmcv.imread(out), expected)
