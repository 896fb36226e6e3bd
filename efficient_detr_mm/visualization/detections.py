"""Detections of a model of this package on images: mmdet's
:class:`~mmdet.apis.DetInferencer` made fit for our configs and
checkpoints (used by ``demo/image_demo.py`` and ``make demo``).

Differences to ``DetInferencer``:

* the model is always given as a config file (or a loaded ``Config``); a
  name is never looked up in a metafile and nothing is downloaded (the
  backbone's ``Pretrained`` init is dropped, as in the picture tools);
* a checkpoint is required; random weights only with an explicit
  ``random_weights=True``;
* the checkpoint is read with :func:`efficient_detr_mm.runtime.safe_load`
  (``weights_only=True``, explicit allow-list: no pickle is executed) and
  must fit the model exactly (an error names missing / unexpected keys);
* class names come from the checkpoint's ``meta.dataset_meta`` and else
  from the config's test-set ``metainfo`` (never silently COCO's), and must
  match the head's ``num_classes``.
"""
import copy
import os.path as osp
from typing import List, Optional, Sequence, Union

import mmcv
import numpy as np
from mmdet.apis import DetInferencer
from mmdet.registry import DATASETS
from mmengine.config import Config
from mmengine.runner.checkpoint import _load_checkpoint_to_model
from torch import nn

from ..runtime import safe_load
from .inputs import build_eval_model


def config_metainfo(cfg: Config) -> dict:
    """``metainfo`` of the config's test set (classes, palette), read
    without loading any annotation file."""
    dataset_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    dataset_cfg['lazy_init'] = True
    return dict(DATASETS.build(dataset_cfg).metainfo)


class EffDetInferencer(DetInferencer):
    """``DetInferencer`` for this package's configs (see the module doc).

    Args:
        model (str | Config): a config file of this package (or any mmdet
            config that imports it) or a loaded config.
        weights (str, optional): checkpoint (mmengine format, e.g. from
            ``tools/train.py`` or a converter in
            ``tools/model_converters/``).
        device (str, optional): e.g. ``'cuda:0'`` or ``'cpu'``; ``None``
            picks CUDA when available.
        palette (str): ``'none'`` (the config's, else the checkpoint's,
            else random), or one of mmdet's palettes: ``'coco'``,
            ``'voc'``, ``'citys'``, ``'random'``.
        random_weights (bool): allow running without ``weights`` (the
            model's own random initialisation; only to check a pipeline).
        show_progress (bool): show a progress bar.
    """

    def __init__(self,
                 model: Union[str, Config],
                 weights: Optional[str] = None,
                 device: Optional[str] = None,
                 palette: str = 'none',
                 random_weights: bool = False,
                 show_progress: bool = True) -> None:
        if isinstance(model, str):
            if not osp.isfile(model):
                raise FileNotFoundError(f'config file not found: {model}')
            model = Config.fromfile(model)  # runs custom_imports
        elif not isinstance(model, Config):
            raise TypeError('model must be a config file or an mmengine '
                            f'Config, got {type(model).__name__}')
        if weights is None and not random_weights:
            raise ValueError(
                'no checkpoint given: pass the weights to run (e.g. '
                '--weights CKPT; official checkpoints are converted with '
                'tools/model_converters/). Nothing is downloaded; random '
                'weights only with random_weights=True (--random-weights).')
        if weights is not None and not osp.isfile(weights):
            raise FileNotFoundError(f'checkpoint file not found: {weights}')
        self._weights_path = weights
        super().__init__(
            model=model,
            weights=weights,
            device=device,
            scope=model.get('default_scope', 'mmdet'),
            palette=palette,
            show_progress=show_progress)

    def _init_model(self, cfg: Config, weights: Optional[str],
                    device: str = 'cpu') -> nn.Module:
        """Build the model without any download; load ``weights``
        safely."""
        model = build_eval_model(cfg, checkpoint=None, device='cpu')
        model.cfg = cfg
        checkpoint = safe_load(weights) if weights is not None else None
        self._load_weights_to_model(model, checkpoint, cfg)
        return model.to(device).eval()

    def _load_weights_to_model(self, model: nn.Module,
                               checkpoint: Optional[dict],
                               cfg: Config) -> None:
        """Load the weights (strict) and set ``model.dataset_meta``: classes
        from the checkpoint, else from the config; palette as in mmdet
        (``palette`` argument -> config -> checkpoint -> random)."""
        meta = {}
        if checkpoint is not None:
            try:
                _load_checkpoint_to_model(model, checkpoint, strict=True)
            except RuntimeError as err:
                raise RuntimeError(
                    f'{self._weights_path} does not fit the model of the '
                    f'config ({cfg.model.type}); is it the checkpoint of '
                    f'this config?\n{err}') from None
            meta = checkpoint.get('meta') or {}
        cfg_meta = config_metainfo(cfg)
        dataset_meta = {
            k.lower(): v
            for k, v in (meta.get('dataset_meta') or {}).items()
        }
        where = f'{self._weights_path} (meta.dataset_meta)'
        if 'classes' not in dataset_meta:
            dataset_meta['classes'] = cfg_meta.get('classes')
            where = f'the config\'s test set ({cfg.filename})'
        classes = dataset_meta['classes']
        num_classes = getattr(
            getattr(model, 'bbox_head', None), 'num_classes', None)
        if not classes or (num_classes is not None
                           and len(classes) != num_classes):
            raise ValueError(
                f'class names from {where}: {classes!r} do not match the '
                f'head\'s num_classes={num_classes}')
        if self.palette != 'none':
            dataset_meta['palette'] = self.palette
        elif cfg_meta.get('palette') is not None:
            dataset_meta['palette'] = cfg_meta['palette']
        elif 'palette' not in dataset_meta:
            dataset_meta['palette'] = 'random'
        model.dataset_meta = dataset_meta


def tile_images(images: Sequence[np.ndarray],
                gap: int = 4,
                fill: int = 255) -> np.ndarray:
    """Images side by side (tops aligned, ``gap`` pixels apart)."""
    if not images:
        raise ValueError('no images to tile')
    height = max(img.shape[0] for img in images)
    width = sum(img.shape[1] for img in images) + gap * (len(images) - 1)
    out = np.full((height, width, 3), fill, dtype=np.uint8)
    x = 0
    for img in images:
        out[:img.shape[0], x:x + img.shape[1]] = img
        x += img.shape[1] + gap
    return out


def detections_picture(inferencer: EffDetInferencer,
                       images: List[str],
                       out_file: str,
                       pred_score_thr: float = 0.3,
                       max_per_image: Optional[int] = None) -> List[int]:
    """Draw the detections of ``inferencer`` on ``images`` (with mmdet's
    visualizer, as ``demo/image_demo.py`` does) side by side into one
    picture ``out_file``: per image the boxes with score >=
    ``pred_score_thr``, at most the ``max_per_image`` best ones.

    Returns:
        list[int]: the number of boxes drawn per image.
    """
    preds = inferencer(
        images,
        return_datasamples=True,
        no_save_vis=True,
        no_save_pred=True)['predictions']
    drawn = []
    for pred in preds:
        inst = pred.pred_instances
        inst = inst[inst.scores.argsort(descending=True)]
        inst = inst[inst.scores >= pred_score_thr][:max_per_image]
        pred.pred_instances = inst
        drawn.append(len(inst))
    vis = inferencer.visualize(
        images, preds, return_vis=True, pred_score_thr=pred_score_thr)
    # the visualizer returns RGB; mmcv writes BGR
    mmcv.imwrite(tile_images(vis)[..., ::-1], out_file)
    return drawn
