"""Shared test helpers: config loading, tiny inputs, tool runners."""
import os
import os.path as osp
import subprocess
import sys

import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def config_path(rel: str) -> str:
    return osp.join(REPO, 'configs', rel)


def load_config(rel: str) -> Config:
    return Config.fromfile(config_path(rel))


def shapes_options(root: str, epochs: int = 1, batch_size: int = 4) -> list:
    """--cfg-options that point a *_shapes.py config at ``root`` and make the
    run short, single-worker and quiet."""
    ann = osp.join(root, 'annotations')
    return [
        f'train_dataloader.dataset.data_root={root}/',
        f'val_dataloader.dataset.data_root={root}/',
        f'test_dataloader.dataset.data_root={root}/',
        f'val_evaluator.ann_file={ann}/instances_val.json',
        f'test_evaluator.ann_file={ann}/instances_val.json',
        f'train_dataloader.batch_size={batch_size}',
        'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0',
        'val_dataloader.persistent_workers=False',
        'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False',
        f'train_cfg.max_epochs={epochs}',
        'train_cfg.val_interval=1',
        'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.interval=1',
        'default_hooks.visualization.draw=False',
    ]


def run_tool(args, cwd=REPO, env=None, timeout=600):
    """Run a command from the repo root with the venv's python; return the
    completed process (stdout+stderr in .stdout) and fail loudly."""
    e = dict(os.environ)
    e.setdefault('OMP_NUM_THREADS', '1')
    e.update(env or {})
    proc = subprocess.run(
        args,
        cwd=cwd,
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout)
    assert proc.returncode == 0, (f'{args} failed ({proc.returncode}):\n' +
                                  proc.stdout[-6000:])
    return proc


def python_tool(*args, **kwargs):
    return run_tool([sys.executable, *args], **kwargs)


def det_samples(shapes, boxes=None, labels=None, batch_shape=None):
    """DetDataSamples for images of (h, w) ``shapes`` padded to
    ``batch_shape`` (default: the largest), with optional GT."""
    if batch_shape is None:
        batch_shape = (max(s[0] for s in shapes), max(s[1] for s in shapes))
    samples = []
    for i, (h, w) in enumerate(shapes):
        s = DetDataSample(
            metainfo=dict(
                img_shape=(h, w),
                ori_shape=(h, w),
                pad_shape=batch_shape,
                batch_input_shape=batch_shape,
                scale_factor=(1.0, 1.0)))
        gt = InstanceData()
        gt.bboxes = (
            torch.as_tensor(boxes[i], dtype=torch.float32).reshape(-1, 4)
            if boxes is not None else torch.zeros(0, 4))
        gt.labels = (
            torch.as_tensor(labels[i], dtype=torch.long)
            if labels is not None else torch.zeros(0, dtype=torch.long))
        s.gt_instances = gt
        samples.append(s)
    return samples
