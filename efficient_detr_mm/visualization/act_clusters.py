"""Pictures of ACT's adaptive clusters: every encoder token coloured by the
cluster it falls in, for one encoder layer and head."""
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn


def _act_layers(model: nn.Module) -> list:
    from efficient_detr_mm.act import act_modules
    layers = act_modules(model.encoder)
    if not layers:
        raise ValueError('the model has no ACTAttention in its encoder '
                         "(use an ACTDETR config, model.type='ACTDETR')")
    return layers


@torch.no_grad()
def capture_clusters(model: nn.Module, batch: Dict, layer: int,
                     head: int) -> Tuple[np.ndarray, int]:
    """Run ``model`` on one preprocessed batch and return the cluster map.

    Args:
        model (nn.Module): an ACT detector (e.g. ``ACTDETR``) in eval mode.
        batch (dict): output of ``model.data_preprocessor`` (``inputs``,
            ``data_samples``), batch size 1.
        layer (int): encoder layer index.
        head (int): attention head index.

    Returns:
        tuple[np.ndarray, int]: (h_feat, w_feat) int cluster ids of image 0
        and the number of clusters in that map.
    """
    layers = _act_layers(model)
    if not 0 <= layer < len(layers):
        raise ValueError(f'layer must be in [0, {len(layers) - 1}], '
                         f'got {layer}')
    mod = layers[layer]
    if not 0 <= head < mod.num_heads:
        raise ValueError(f'head must be in [0, {mod.num_heads - 1}], '
                         f'got {head}')
    mod.keep_groups = True
    try:
        feats = model.extract_feat(batch['inputs'])
        model.forward_transformer(feats, batch['data_samples'])
    finally:
        mod.keep_groups = False
    if mod.last_groups is None:
        raise RuntimeError('ACT did not run (enabled=False or group_q='
                           'False): nothing to draw')
    hf, wf = feats[-1].shape[-2:]
    ids = mod.last_groups[0, head].view(hf, wf).cpu().numpy()
    # renumber to 0..K-1 in order of appearance (stable colours)
    _, ids = np.unique(ids, return_inverse=True)
    ids = ids.reshape(hf, wf)
    return ids, int(ids.max()) + 1


def cluster_palette(num: int, seed: int = 0) -> np.ndarray:
    """``num`` distinct-ish random colours (uint8, (num, 3))."""
    rng = np.random.RandomState(seed)
    return rng.randint(40, 256, size=(max(num, 1), 3)).astype(np.uint8)


def render_clusters(image: np.ndarray,
                    ids: np.ndarray,
                    alpha: float = 0.55,
                    palette: Optional[np.ndarray] = None,
                    valid_hw: Optional[Tuple[int, int]] = None
                    ) -> np.ndarray:
    """Blend a colour per cluster over ``image``.

    Args:
        image (np.ndarray): (H, W, 3) uint8 image the features came from.
        ids (np.ndarray): (h_feat, w_feat) cluster ids.
        alpha (float): weight of the colours.
        palette (np.ndarray, optional): (K, 3) colours.
        valid_hw (tuple, optional): unpadded (H, W) part of ``image``.

    Returns:
        np.ndarray: (H, W, 3) uint8 picture with cluster borders darkened.
    """
    import mmcv
    h, w = image.shape[:2]
    if palette is None:
        palette = cluster_palette(int(ids.max()) + 1)
    big = mmcv.imresize(
        ids.astype(np.float32), (w, h), interpolation='nearest').astype(int)
    colour = palette[big]
    out = (image.astype(np.float32) * (1 - alpha) +
           colour.astype(np.float32) * alpha)
    # darken the borders between clusters
    edge = np.zeros((h, w), dtype=bool)
    edge[1:, :] |= big[1:, :] != big[:-1, :]
    edge[:, 1:] |= big[:, 1:] != big[:, :-1]
    out[edge] *= 0.3
    out = out.clip(0, 255).astype(np.uint8)
    if valid_hw is not None:
        out = out[:valid_hw[0], :valid_hw[1]]
    return out
