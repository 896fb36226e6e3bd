"""No loader of the package executes a pickle.

A checkpoint whose pickle would run ``os.system('touch MARKER')`` goes
through every loader: each converter CLI in tools/model_converters/, the
picture and analysis tools, demo/image_demo.py (when present), the MTKD
teacher, mmengine's runner and loaders, tools/test.py and tools/train.py
(``--resume`` and ``load_from``).  Every one must refuse it with an
error naming the file and the refused global, and the marker must not
exist.  The hostile ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (which turns
``torch.load``'s weights-only default off) is set throughout, so a loader
only passes if it asks for weights-only loading itself.
"""
import glob
import os
import os.path as osp
import pickle
import runpy
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from helpers import REPO, config_path, shapes_options

UNSAFE_ENV = 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'


class _Payload:
    """Unpickling this runs ``os.system('touch MARKER')``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


@pytest.fixture(autouse=True)
def mmengine_loaders_reset(monkeypatch):
    """Each test starts with mmengine's own (unsafe-by-environment)
    checkpoint loaders, so that a loader passes only if it installs the
    safe ones itself (importing the package does: tested in a fresh
    process below), not because an earlier test did."""
    from mmengine.runner.checkpoint import CheckpointLoader, load_from_local
    schemes = type(CheckpointLoader._schemes)(
        (prefix, load_from_local if prefix == '' else getattr(
            loader, '__wrapped__', loader))
        for prefix, loader in CheckpointLoader._schemes.items())
    monkeypatch.setattr(CheckpointLoader, '_schemes', schemes)


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """(checkpoint path, marker path); the unsafe env default is set."""
    monkeypatch.setenv(UNSAFE_ENV, '1')
    marker = str(tmp_path / 'PWNED')
    path = str(tmp_path / 'evil_checkpoint.pth')
    weights = {'w': torch.zeros(1)}
    torch.save(
        dict(
            model=weights,
            state_dict=weights,
            meta=dict(),
            payload=_Payload(marker)), path)
    return path, marker


def _assert_refused(message: str, path: str, marker: str) -> None:
    assert not osp.exists(marker), 'the pickle was executed'
    assert osp.basename(path) in message, message[-2000:]
    assert 'system' in message, message[-2000:]  # the refused global


def _run_script(script: str, argv, capsys) -> str:
    """Run ``script`` in this process as ``__main__``; return what it
    raised or printed (it must fail)."""
    old = sys.argv
    sys.argv = [script, *argv]
    try:
        runpy.run_path(script, run_name='__main__')
    except SystemExit as err:
        assert err.code not in (0, None), 'the tool succeeded'
        out = capsys.readouterr()
        return out.out + out.err
    except Exception as err:  # noqa: B902  the refusal
        return f'{type(err).__name__}: {err}'
    finally:
        sys.argv = old
    raise AssertionError(f'{script} loaded a malicious checkpoint')


def test_payload_is_live(evil):
    """Control: an unsafe load of the fixture does run the payload."""
    path, marker = evil
    torch.load(path, weights_only=False)
    assert osp.exists(marker)


CONVERTERS = sorted(
    glob.glob(osp.join(REPO, 'tools', 'model_converters', '*.py')))


@pytest.mark.parametrize(
    'script', CONVERTERS, ids=[osp.basename(s) for s in CONVERTERS])
def test_converter_cli(evil, script, tmp_path, capsys):
    path, marker = evil
    dst = str(tmp_path / 'converted.pth')
    _assert_refused(_run_script(script, [path, dst], capsys), path, marker)
    assert not osp.exists(dst)


#: tools/ scripts that take a checkpoint -> their argv for (checkpoint,
#: image, output); skipped when the script is not in the checkout
CHECKPOINT_TOOLS = {
    'analysis_tools/visualize_act_clusters.py':
    lambda c, i, o: ['configs/act/act-l32_r18-tiny-dc5_1xb4-12e_shapes.py',
                     c, i, '--out', o],
    'analysis_tools/visualize_focus_tokens.py':
    lambda c, i, o: ['configs/focus_detr/'
                     'focus-detr-4scale_r18-tiny_1xb4-12e_shapes.py', c,
                     '--img', i, '--out', o],
    'analysis_tools/visualize_kda.py':
    lambda c, i, o: ['configs/lite_detr/'
                     'lite-dino-h3l1-1blk_r18-tiny_1xb4-12e_shapes.py', c,
                     '--img', i, '--out', o],
    'analysis_tools/visualize_smca.py':
    lambda c, i, o: ['configs/smca/smca_r18-tiny_1xb4-12e_shapes.py', c,
                     '--img', i, '--out', o],
    'analysis_tools/get_flops.py':
    lambda c, i, o: ['configs/detr/detr_r18-tiny_1xb4-12e_shapes.py',
                     '--checkpoint', c, '--shape', '64', '64'],
    'analysis_tools/benchmark.py':
    lambda c, i, o: ['configs/detr/detr_r18-tiny_1xb4-12e_shapes.py',
                     '--checkpoint', c, '--shape', '64', '64'],
    'deployment/pytorch2onnx.py':
    lambda c, i, o: ['configs/detr/detr_r18-tiny_1xb4-12e_shapes.py',
                     '--checkpoint', c, '--shape', '64', '64', '--out',
                     o + '.onnx'],
}


def test_every_checkpoint_tool_is_covered():
    """A new script in tools/analysis_tools or tools/deployment that reads
    a checkpoint must be added to CHECKPOINT_TOOLS."""
    missing = []
    for folder in ('analysis_tools', 'deployment'):
        for path in glob.glob(osp.join(REPO, 'tools', folder, '*.py')):
            with open(path) as f:
                reads = 'checkpoint' in f.read()
            rel = f'{folder}/{osp.basename(path)}'
            if reads and rel not in CHECKPOINT_TOOLS:
                missing.append(rel)
    assert not missing, f'add {missing} to CHECKPOINT_TOOLS'


@pytest.mark.parametrize('tool', sorted(CHECKPOINT_TOOLS))
def test_checkpoint_tool(evil, tool, tmp_path, capsys, monkeypatch):
    script = osp.join(REPO, 'tools', tool)
    if not osp.exists(script):
        pytest.skip(f'tools/{tool} not in this checkout')
    path, marker = evil
    img = str(tmp_path / 'img.png')
    import mmcv
    import numpy as np
    mmcv.imwrite(np.zeros((64, 64, 3), np.uint8), img)
    monkeypatch.chdir(REPO)
    argv = CHECKPOINT_TOOLS[tool](path, img, str(tmp_path / 'out.png'))
    message = _run_script(script, argv, capsys)
    if message.startswith('ModuleNotFoundError'):
        pytest.skip(f'tools/{tool} needs a package not installed: {message}')
    _assert_refused(message, path, marker)


def test_image_demo(evil, tmp_path, capsys, monkeypatch):
    script = osp.join(REPO, 'demo', 'image_demo.py')
    if not osp.exists(script):
        pytest.skip('demo/image_demo.py not in this checkout')
    path, marker = evil
    img = str(tmp_path / 'img.png')
    import mmcv
    import numpy as np
    mmcv.imwrite(np.zeros((64, 64, 3), np.uint8), img)
    monkeypatch.chdir(REPO)
    argv = [img, config_path('detr/detr_r18-tiny_1xb4-12e_shapes.py'),
            '--weights', path, '--out-dir', str(tmp_path / 'out'),
            '--device', 'cpu']
    _assert_refused(_run_script(script, argv, capsys), path, marker)


def test_mtkd_teacher(evil):
    from mmengine.config import Config

    from efficient_detr_mm.act import MTKDHook
    path, marker = evil
    cfg = Config.fromfile(
        config_path('act/act-l32_r18-tiny-dc5_1xb4-12e_shapes.py'))
    cfg.model.backbone.init_cfg = None
    hook = MTKDHook(teacher_checkpoint=path, teacher_model=cfg.model)
    with pytest.raises(pickle.UnpicklingError) as err:
        hook._build_teacher(SimpleNamespace(cfg=cfg), torch.nn.Linear(1, 1))
    _assert_refused(str(err.value), path, marker)


def test_package_loaders(evil):
    """The package's ``load_checkpoint`` (picture / analysis inputs, MTKD)
    and the study script's reader."""
    from efficient_detr_mm.runtime import load_checkpoint
    path, marker = evil
    with pytest.raises(pickle.UnpicklingError) as err:
        load_checkpoint(torch.nn.Linear(1, 1), path)
    _assert_refused(str(err.value), path, marker)
    # the study script's own reader
    sys.path.insert(0, REPO)
    try:
        from projects.shapes.act_study import _checkpoint_iters
    finally:
        sys.path.remove(REPO)
    with pytest.raises(pickle.UnpicklingError) as err:
        _checkpoint_iters(path)
    _assert_refused(str(err.value), path, marker)


def test_package_import_makes_mmengine_loads_safe(evil):
    """A fresh process: importing the package (what configs'
    ``custom_imports`` and every tool do) makes mmengine's loaders safe
    (e.g. ``init_cfg=dict(type='Pretrained', ...)``, mmdet's inferencer)."""
    path, marker = evil
    code = ('import efficient_detr_mm, sys\n'
            'from mmengine.runner.checkpoint import CheckpointLoader\n'
            'CheckpointLoader.load_checkpoint(sys.argv[1])\n')
    proc = subprocess.run([sys.executable, '-c', code, path],
                          cwd=REPO,
                          env=dict(os.environ, OMP_NUM_THREADS='1'),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True,
                          timeout=300)
    assert proc.returncode != 0
    _assert_refused(proc.stdout, path, marker)


def test_remote_schemes_are_weights_only(evil):
    """mmengine's http / torchvision / ceph ... loaders are wrapped: a
    ``torch.load`` without ``weights_only`` inside them is weights-only."""
    from mmengine.runner.checkpoint import CheckpointLoader

    from efficient_detr_mm.runtime import (_safe_scheme,
                                           use_safe_checkpoint_loader)
    path, marker = evil
    use_safe_checkpoint_loader()
    for prefix, loader in CheckpointLoader._schemes.items():
        assert getattr(loader, '_efficient_detr_mm_safe', False) or \
            prefix == '', prefix

    def plain_loader(filename, map_location=None):
        return torch.load(filename, map_location=map_location)

    with pytest.raises(pickle.UnpicklingError) as err:
        _safe_scheme(plain_loader)(path)
    _assert_refused(str(err.value), path, marker)
    assert os.environ[UNSAFE_ENV] == '1'  # restored afterwards


@pytest.mark.parametrize('tool', ['test', 'train-resume', 'train-load-from'])
def test_test_and_train_tools(evil, tool, shapes_root, tmp_path, capsys,
                              monkeypatch):
    """tools/test.py CONFIG CKPT, tools/train.py --resume CKPT and
    tools/train.py with ``load_from`` (run in this process as
    ``__main__``: they load through mmengine's runner)."""
    path, marker = evil
    monkeypatch.chdir(REPO)
    cfg = config_path('detr/detr_r18-tiny_1xb4-12e_shapes.py')
    opts = ['--work-dir', str(tmp_path / 'work'), '--cfg-options'
            ] + shapes_options(shapes_root)
    if tool == 'test':
        script, argv = 'tools/test.py', [cfg, path] + opts
    elif tool == 'train-resume':
        script, argv = 'tools/train.py', [cfg, '--resume', path] + opts
    else:
        script, argv = 'tools/train.py', [cfg] + opts + [f'load_from={path}']
    _assert_refused(_run_script(script, argv, capsys), path, marker)


def test_no_weights_only_false_in_sources():
    """Nothing in the package, tools, projects or demo turns the safe mode
    off."""
    offenders = []
    for folder in ('efficient_detr_mm', 'tools', 'projects', 'demo'):
        for py in glob.glob(
                osp.join(REPO, folder, '**', '*.py'), recursive=True):
            with open(py) as f:
                text = f.read().replace(' ', '')
            if 'weights_only=False' in text or 'pickle.load(' in text:
                offenders.append(osp.relpath(py, REPO))
    assert not offenders, offenders
