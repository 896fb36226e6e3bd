"""Checkpoints survive a kill: every config uses AtomicCheckpointHook, and a
tiny training run SIGKILLed at several moments of a checkpoint save always
resumes (``tools/train.py --resume``) from the newest complete checkpoint.

The runs are forked from the test process (no re-import, ~1 s each); the
child arms a kill at one moment of the save of ``epoch_2.pth`` by wrapping
a file-system primitive (mmengine's local file backend or ``os.replace``)
and SIGKILLs itself there.
"""
import glob
import multiprocessing
import os
import os.path as osp
import pickle
import runpy
import signal
import sys

import pytest
import torch
from helpers import REPO, load_config, shapes_options
from mmdet.registry import HOOKS

from efficient_detr_mm.engine import AtomicCheckpointHook
from efficient_detr_mm.runtime import safe_load

CONFIGS = sorted(
    osp.relpath(p, osp.join(REPO, 'configs'))
    for p in glob.glob(osp.join(REPO, 'configs', '*', '*.py'))
    if '/_base_/' not in p)

CFG = 'configs/detr/detr_r18-tiny_1xb4-12e_shapes.py'
#: the save during which the run is killed
TARGET = 'epoch_2.pth'


@pytest.mark.parametrize('rel', CONFIGS)
def test_every_config_uses_the_atomic_checkpoint_hook(rel):
    hook = load_config(rel).default_hooks.checkpoint
    assert HOOKS.get(hook.type) is AtomicCheckpointHook, (rel, hook.type)


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(moment: str, work: str) -> None:
    """Make this process SIGKILL itself at ``moment`` of the save of
    ``TARGET``."""
    from mmengine.fileio import LocalBackend
    if moment == 'write':  # half of the bytes are on disk
        put = LocalBackend.put

        def half_put(self, obj, filepath):
            if osp.basename(str(filepath)).startswith(TARGET):
                with open(filepath, 'wb') as f:
                    f.write(obj[:len(obj) // 2])
                _die()
            return put(self, obj, filepath)

        LocalBackend.put = half_put
    elif moment in ('rename', 'last_checkpoint'):
        replace = os.replace

        def names_target(path):
            with open(path) as f:
                return f.read().strip().endswith(TARGET)

        def killing_replace(src, dst, *args, **kwargs):
            dst_name = osp.basename(str(dst))
            if moment == 'rename' and dst_name == TARGET:
                _die()  # the complete file is about to get its final name
            if moment == 'last_checkpoint' and \
                    dst_name == 'last_checkpoint' and names_target(src):
                _die()  # last_checkpoint is about to name epoch_2.pth
            return replace(src, dst, *args, **kwargs)

        os.replace = killing_replace
    elif moment == 'remove':  # the old checkpoint is about to be removed
        remove = LocalBackend.remove

        def killing_remove(self, filepath):
            _die()
            return remove(self, filepath)

        LocalBackend.remove = killing_remove
    else:
        raise ValueError(moment)


def _train(args: list, log: str, moment: str = None) -> None:
    """tools/train.py ARGS in this (forked) process, output to ``log``."""
    sys.stdout = sys.stderr = open(log, 'a', buffering=1)
    torch.set_num_threads(1)
    # mmengine formats the config with yapf for every log and checkpoint
    # (80 % of these runs' time); the plain text is enough here
    from mmengine.config import Config
    Config.pretty_text = property(lambda self: repr(self.to_dict()))
    if moment is not None:
        _arm(moment, args[args.index('--work-dir') + 1])
    sys.argv = ['tools/train.py'] + args
    runpy.run_path(osp.join(REPO, 'tools', 'train.py'), run_name='__main__')


def _run(args: list, log: str, moment: str = None) -> int:
    import torch._dynamo  # noqa: F401  (imported once, not in every child)
    ctx = multiprocessing.get_context('fork')
    proc = ctx.Process(target=_train, args=(args, log, moment))
    proc.start()
    proc.join(300)
    return proc.exitcode


def _complete_epochs(work: str) -> list:
    """Epochs of the checkpoints on disk (also under a temporary name) that
    load completely."""
    epochs = []
    for path in glob.glob(osp.join(work, 'epoch_*.pth*')):
        try:
            state = safe_load(path)
        except (RuntimeError, EOFError, pickle.UnpicklingError):
            continue
        epochs.append(state['meta']['epoch'])
    return sorted(epochs)


@pytest.mark.parametrize('moment',
                         ['write', 'rename', 'last_checkpoint', 'remove'])
def test_resume_after_kill_during_save(shapes_root, tmp_path, moment):
    work = str(tmp_path / 'run')
    log = str(tmp_path / 'log.txt')
    # 2 epochs of 1 iteration, a checkpoint every epoch, keep 1 (the MTKD
    # shapes configs' setting); a narrow backbone keeps the files small
    opts = shapes_options(shapes_root, epochs=2, batch_size=8) + [
        'train_cfg.val_interval=100',
        'default_hooks.checkpoint.max_keep_ckpts=1',
        'model.backbone.base_channels=16', 'model.neck.in_channels=[128]'
    ]
    args = [CFG, '--work-dir', work, '--cfg-options', *opts]
    code = _run(args, log, moment)
    out = open(log).read()
    assert code == -signal.SIGKILL, (code, out[-3000:])
    complete = _complete_epochs(work)
    assert complete, f'no complete checkpoint left: {os.listdir(work)}'

    code = _run(args[:3] + ['--resume'] + args[3:], log)
    out = open(log).read()
    assert code == 0, out[-3000:]
    assert f'resumed epoch: {complete[-1]}, iter: {complete[-1]}' in out, \
        out[-3000:]
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip() == osp.join(work, TARGET)
    # max_keep_ckpts=1 holds again and no temporary file is left
    left = sorted(n for n in os.listdir(work) if '.pth' in n)
    assert left == [TARGET], left
    assert safe_load(osp.join(work, TARGET))['meta']['epoch'] == 2
