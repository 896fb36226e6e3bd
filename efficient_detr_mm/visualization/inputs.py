"""Model and image loading shared by the picture tools in
``tools/analysis_tools/visualize_*.py``."""
import copy
from typing import Optional, Tuple

from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from torch import nn

from ..runtime import load_checkpoint


def build_eval_model(cfg: Config,
                     checkpoint: Optional[str] = None,
                     device: str = 'cpu') -> nn.Module:
    """Build ``cfg.model`` in eval mode: weights from ``checkpoint`` when
    given, else the model's own initialisation (no pretrained download)."""
    from mmdet.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.init_cfg = None
    model = MODELS.build(model_cfg)
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location='cpu')
    else:
        model.init_weights()
    return model.to(device).eval()


def test_pipeline(cfg: Config) -> Compose:
    """The config's test pipeline without annotation loading."""
    steps = [
        s for s in copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
        if s['type'] != 'LoadAnnotations'
    ]
    for s in steps:
        if s['type'] == 'PackDetInputs':
            s['meta_keys'] = ('img_id', 'img_path', 'ori_shape', 'img_shape',
                              'scale_factor')
    return Compose(steps)


def load_image(cfg: Config, model: nn.Module, img: str) -> Tuple[dict, dict]:
    """Run ``img`` through the test pipeline and the model's preprocessor.

    Returns:
        tuple: the packed pipeline output of the one image (``inputs`` CHW,
        ``data_samples``) and the preprocessed batch of one (``inputs``
        (1, 3, H, W), ``data_samples`` list).
    """
    data = test_pipeline(cfg)(dict(img_path=img, img_id=0))
    batch = model.data_preprocessor(pseudo_collate([data]), False)
    return data, batch
