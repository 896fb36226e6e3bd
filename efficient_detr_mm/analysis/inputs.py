"""Models and inputs for the analysis tools, without any dataset.

A config is built as it would be for testing, with no pretrained download
(every ``init_cfg`` of type ``Pretrained`` is dropped), in eval mode; the
inputs are a synthetic (or user-given) image run through the model's own
``data_preprocessor``, so ``img_shape``, ``batch_input_shape``,
``pad_shape`` and ``scale_factor`` are what a test pipeline would give.
"""
from typing import Any, List, Optional, Sequence, Tuple

import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from torch import nn


def drop_pretrained(cfg: Any) -> Any:
    """Remove every ``init_cfg`` of type ``Pretrained`` from a (nested)
    model config, in place, so that building it downloads nothing."""
    if isinstance(cfg, dict):
        init = cfg.get('init_cfg')
        if isinstance(init, dict) and init.get('type') == 'Pretrained':
            cfg['init_cfg'] = None
        for v in cfg.values():
            drop_pretrained(v)
    elif isinstance(cfg, (list, tuple)):
        for v in cfg:
            drop_pretrained(v)
    return cfg


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Read a config (its ``custom_imports`` are imported), merge options
    and set the default registry scope."""
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return cfg


def build_detector(cfg: Config,
                   checkpoint: Optional[str] = None,
                   device: str = 'cpu') -> nn.Module:
    """Build ``cfg.model`` for inference: no download, weights initialised
    (or loaded from ``checkpoint``), SyncBN reverted, eval mode."""
    model_cfg = drop_pretrained(cfg.model.copy())
    model = MODELS.build(model_cfg)
    if checkpoint:
        from ..runtime import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu')
    else:
        model.init_weights()
    model = revert_sync_batchnorm(model)
    return model.to(device).eval()


def synthetic_images(shape: Tuple[int, int],
                     batch_size: int = 1,
                     seed: int = 0,
                     img_path: Optional[str] = None) -> List[torch.Tensor]:
    """``batch_size`` uint8 (3, H, W) images: random noise of ``shape``, or
    the image at ``img_path`` resized to ``shape`` (kept as is when
    ``shape`` is None)."""
    if img_path is not None:
        import mmcv
        img = mmcv.imread(img_path)
        if shape is not None:
            img = mmcv.imresize(img, (shape[1], shape[0]))
        img = torch.from_numpy(img).permute(2, 0, 1).contiguous()
        return [img.clone() for _ in range(batch_size)]
    g = torch.Generator().manual_seed(seed)
    h, w = shape
    return [
        torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        for _ in range(batch_size)
    ]


def make_batch(images: Sequence[torch.Tensor]) -> dict:
    """A test-time ``data_batch`` (``inputs`` + ``data_samples`` with
    ``img_shape``, ``ori_shape``, ``scale_factor``; the preprocessor adds
    ``batch_input_shape`` and ``pad_shape``)."""
    samples = []
    for img in images:
        h, w = img.shape[-2:]
        samples.append(
            DetDataSample(
                metainfo=dict(
                    img_id=len(samples),
                    img_shape=(h, w),
                    ori_shape=(h, w),
                    scale_factor=(1.0, 1.0))))
    return dict(inputs=list(images), data_samples=samples)


def preprocess(model: nn.Module, images: Sequence[torch.Tensor]) -> dict:
    """Run the model's ``data_preprocessor`` (test mode) on ``images``:
    returns ``dict(inputs=Tensor, data_samples=[DetDataSample])``."""
    with torch.no_grad():
        return model.data_preprocessor(make_batch(images), False)
