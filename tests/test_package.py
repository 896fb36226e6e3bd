"""The package installs, has a version and registers through custom_imports.
"""
import os.path as osp

from helpers import REPO, python_tool

import efficient_detr_mm


def test_version():
    parts = efficient_detr_mm.__version__.split('.')
    assert len(parts) == 3 and all(p.isdigit() for p in parts)


def test_custom_imports_registers_everything_in_a_fresh_process():
    # no explicit import of efficient_detr_mm: only the config's
    # custom_imports; run outside the repo so the installed package is used
    code = (
        'from mmengine.config import Config\n'
        'from mmdet.registry import MODELS\n'
        'from mmdet.utils import register_all_modules\n'
        'register_all_modules()\n'
        'assert MODELS.get("EffDINO") is None\n'
        f'Config.fromfile({osp.join(REPO, "configs/dino/dino-4scale_r50_8xb2-12e_coco.py")!r})\n'  # noqa
        'for name in ("EffDINO", "EffDETR", "EffDeformableDETR",\n'
        '             "EffDeformableDetrTransformerEncoder"):\n'
        '    assert MODELS.get(name) is not None, name\n'
        'print("registered")\n')
    out = python_tool('-c', code, cwd='/').stdout
    assert 'registered' in out


def test_make_shapes_tool(tmp_path):
    out = python_tool('tools/dataset_converters/make_shapes.py', '--out',
                      str(tmp_path / 'd'), '--num-train', '2', '--num-val',
                      '1', '--img-size', '64').stdout
    assert 'instances_train.json' in out
    assert osp.exists(tmp_path / 'd' / 'val' / '000000.jpg')
