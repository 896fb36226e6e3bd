"""Pictures of SMCA's spatial prior: each query's Gaussian-like map G (per
head) over the image, with the query's predicted box."""
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from torch import Tensor


@torch.no_grad()
def smca_gaussian_maps(model: torch.nn.Module,
                       inputs: Tensor,
                       data_samples: list,
                       layer: int = -1,
                       level: Optional[int] = None,
                       topk: int = 4) -> Dict:
    """Run an ``SMCADETR`` and collect the Gaussian maps of one decoder
    layer for the ``topk`` highest-scoring queries of every image.

    Args:
        model: a built ``SMCADETR`` (eval mode).
        inputs (Tensor): (bs, 3, H, W) preprocessed (padded) images.
        data_samples (list): their ``DetDataSample``s.
        layer (int): decoder layer whose maps are shown (default the last).
        level (int, optional): feature level (multi-scale); default the
            stride-32 level if there is one, else the first.
        topk (int): queries per image, by best class score.

    Returns:
        dict: ``maps`` (bs, topk, heads, h_l, w_l) G = exp(log G) in [0, 1]
        on the padded level grid; ``boxes`` (bs, topk, 4) xyxy in
        network-input pixels; ``scores`` / ``labels`` / ``queries``
        (bs, topk); ``stride`` and ``spatial_shape`` of the level.
    """
    captured = {}
    gaussian = model.decoder.layers[layer].gaussian
    handle = gaussian.register_forward_hook(
        lambda m, args, out: captured.update(log_g=out[0], args=args))
    try:
        feats = model.extract_feat(inputs)
        head_in = model.forward_transformer(feats, data_samples)
    finally:
        handle.remove()
    cls, boxes = model.bbox_head(head_in['hidden_states'][-1:],
                                 head_in['references'])
    cls, boxes = cls[0], boxes[0]  # (bs, nq, ncls), (bs, nq, 4)
    scores, labels = cls.sigmoid().max(-1)
    scores, queries = scores.topk(min(topk, scores.shape[1]), dim=1)
    labels = labels.gather(1, queries)
    shapes = list(captured['args'][3])
    strides = list(captured['args'][4])
    if level is None:
        level = strides.index(32) if 32 in strides else 0
    start = sum(h * w for h, w in shapes[:level])
    h, w = shapes[level]
    log_g = captured['log_g'][..., start:start + h * w]  # (bs, M, nq, hw)
    bs, heads = log_g.shape[:2]
    idx = queries[:, None, :, None].expand(bs, heads, -1, h * w)
    maps = log_g.gather(2, idx).exp().transpose(1, 2)
    maps = maps.reshape(bs, -1, heads, h, w)
    pad_h, pad_w = data_samples[0].batch_input_shape
    scale = boxes.new_tensor([pad_w, pad_h, pad_w, pad_h])
    sel = boxes.gather(1, queries[..., None].expand(-1, -1, 4))
    return dict(
        maps=maps.cpu(),
        boxes=(bbox_cxcywh_to_xyxy(sel) * scale).cpu(),
        scores=scores.cpu(),
        labels=labels.cpu(),
        queries=queries.cpu(),
        stride=strides[level],
        spatial_shape=(h, w))


def draw_smca_maps(image: np.ndarray,
                   maps: np.ndarray,
                   boxes: np.ndarray,
                   out_file: str,
                   scores: Optional[Sequence[float]] = None,
                   labels: Optional[Sequence[str]] = None,
                   pad_shape: Optional[Sequence[int]] = None,
                   title: str = 'SMCA Gaussian maps') -> None:
    """Save a grid: one row per query, one column per head (plus the head
    mean first), each the image overlaid with G and the query's box.

    Args:
        image (np.ndarray): (h, w, 3) uint8 RGB network-input image.
        maps (np.ndarray): (k, heads, h_l, w_l) maps G on the padded grid.
        boxes (np.ndarray): (k, 4) xyxy boxes in network-input pixels.
        out_file (str): PNG path.
        scores, labels: optional per-query annotations for the row titles.
        pad_shape (Sequence[int], optional): (H, W) of the padded batch the
            grid covers; defaults to the image size.
        title (str): figure title.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    h, w = image.shape[:2]
    ph, pw = pad_shape if pad_shape is not None else (h, w)
    k, heads = maps.shape[:2]
    cols = heads + 1
    fig, axes = plt.subplots(
        k, cols, figsize=(1.9 * cols, 1.9 * k * h / max(w, 1) + 0.6),
        squeeze=False)
    for r in range(k):
        panels = [maps[r].mean(0)] + [maps[r, i] for i in range(heads)]
        for c, g in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(image)
            ax.imshow(
                g,
                cmap='jet',
                alpha=0.5,
                vmin=0,
                vmax=1,
                extent=(0, pw, ph, 0),
                interpolation='bilinear')
            x1, y1, x2, y2 = boxes[r]
            ax.add_patch(
                Rectangle((x1, y1),
                          x2 - x1,
                          y2 - y1,
                          fill=False,
                          color='white',
                          linewidth=1.2))
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            ax.axis('off')
            if r == 0:
                ax.set_title('mean of heads' if c == 0 else f'head {c - 1}',
                             fontsize=8)
        name = f'q{r}'
        if labels is not None:
            name = f'{labels[r]}'
        if scores is not None:
            name += f' {scores[r]:.2f}'
        axes[r, 0].text(
            2, 2, name, fontsize=7, va='top',
            bbox=dict(facecolor='white', alpha=0.7, pad=1, linewidth=0))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_file, dpi=110)
    plt.close(fig)
