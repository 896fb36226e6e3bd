"""Registry-aware construction helpers shared by every paper."""
import copy
from typing import Optional, Union

from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from torch import nn


def build_or_default(cfg: Optional[Union[dict, ConfigDict]],
                     default: type) -> nn.Module:
    """Build ``cfg`` from mmdet's ``MODELS`` when it names a ``type``.

    Without a ``type`` key the config is splatted into ``default``, which is
    exactly what mmdet's own ``_init_layers`` does, so stock configs give the
    stock modules.

    Args:
        cfg (dict | ConfigDict | None): sub-config of an encoder, decoder,
            layer, attention or FFN. ``None`` means "defaults of ``default``".
        default (type): the mmdet / mmcv class used when ``cfg`` has no type.

    Returns:
        nn.Module: the built module.
    """
    cfg = copy.deepcopy(dict(cfg)) if cfg is not None else {}
    if 'type' in cfg:
        return MODELS.build(cfg)
    return default(**cfg)


def reinit_custom_modules(*modules: nn.Module) -> None:
    """Re-run the own initialisation of custom modules.

    mmdet's DETR detectors apply a blanket Xavier pass to every parameter of
    the encoder and decoder with more than one dimension and then only
    re-initialise ``MultiScaleDeformableAttention`` instances.  A module of
    this package that needs its own initialisation declares the class
    attribute ``keeps_own_init = True``; this function calls its
    ``init_weights`` again after the Xavier pass (MSDA's own init is
    deterministic, so running it twice for an MSDA subclass is harmless).
    """
    for root in modules:
        for m in root.modules():
            if getattr(m, 'keeps_own_init', False):
                m.init_weights()
