"""Pictures of deformable attention: the sampling points of chosen encoder
queries and their attention weights, for Lite DETR's key-aware attention
(KDA) and mmcv's multi-scale deformable attention (MSDA) alike."""
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from mmcv.ops import MultiScaleDeformableAttention
from torch import Tensor, nn

from ..common.deform_sampling import deform_sampling_locations
from ..lite_detr.kd_attention import KDAttention

LEVEL_MARKERS = ('o', 's', '^', 'D', 'v', 'p')


@torch.no_grad()
def deform_attention_points(attn: nn.Module, call: Dict) -> Dict[str, Tensor]:
    """Sampling locations and attention weights of one captured call.

    Args:
        attn (nn.Module): a :class:`KDAttention` or mmcv
            ``MultiScaleDeformableAttention``.
        call (dict): the keyword arguments of the call (``query``,
            ``value``, ``query_pos``, ``key_padding_mask``,
            ``reference_points``, ``spatial_shapes``).

    Returns:
        dict: ``locations`` (bs, nq, heads, levels, points, 2) normalised
        (x, y) over the padded image, ``weights`` (bs, nq, heads, levels,
        points) (each head's weights sum to 1), ``reference_points``
        (bs, nq, levels, 2 or 4).
    """
    query = call['query']
    value = call.get('value')
    value = query if value is None else value
    if call.get('query_pos') is not None:
        query = query + call['query_pos']
    if not attn.batch_first:
        query, value = query.transpose(0, 1), value.transpose(0, 1)
    ref, shapes = call['reference_points'], call['spatial_shapes']
    bs, nq, _ = query.shape
    heads, levels, points = attn.num_heads, attn.num_levels, attn.num_points
    if isinstance(attn, KDAttention):
        _, weights, locations = attn.sample_and_weigh(
            query, value, call.get('key_padding_mask'), ref, shapes)
        weights = weights.transpose(1, 2)
    elif isinstance(attn, MultiScaleDeformableAttention):
        offsets = attn.sampling_offsets(query).view(bs, nq, heads, levels,
                                                    points, 2)
        locations = deform_sampling_locations(ref, offsets, shapes)
        weights = attn.attention_weights(query).view(
            bs, nq, heads, levels * points).float().softmax(-1)
    else:
        raise TypeError('expected KDAttention or MultiScaleDeformableAttention'
                        f', got {type(attn).__name__}')
    return dict(
        locations=locations,
        weights=weights.reshape(bs, nq, heads, levels, points),
        reference_points=ref)


@torch.no_grad()
def capture_encoder_attention(model: nn.Module, inputs: Tensor,
                              data_samples: list, layer: int = -1) -> Dict:
    """Run a Deformable-DETR-family detector's encoder and return the
    sampling points and weights of the self-attention of encoder ``layer``
    (see :func:`deform_attention_points`) for all of that layer's queries.
    """
    attn = model.encoder.layers[layer].self_attn
    captured = {}
    handle = attn.register_forward_pre_hook(
        lambda m, args, kwargs: captured.update(kwargs), with_kwargs=True)
    try:
        feats = model.extract_feat(inputs)
        encoder_inputs, _ = model.pre_transformer(feats, data_samples)
        model.forward_encoder(**encoder_inputs)
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError('the encoder layer was not called with keyword '
                           'arguments; cannot capture its attention')
    return deform_attention_points(attn, captured)


def nearest_queries(reference_points: Tensor, points: Tensor) -> Tensor:
    """Indices of the queries whose reference points (first level, (x, y)
    normalised) are nearest to ``points`` (k, 2), for image 0."""
    ref = reference_points[0, :, 0, :2]
    return torch.cdist(points.to(ref), ref).argmin(-1)


def draw_sampling_points(image: np.ndarray,
                         panels: Sequence[Dict],
                         out_file: str,
                         pad_shape: Sequence[int],
                         title: Optional[str] = None) -> None:
    """Draw, per panel, the chosen queries (crosses) and their sampling
    points (one colour per query, one marker per level, area proportional
    to the attention weight) over the image.

    Args:
        image (np.ndarray): (h, w, 3) uint8 RGB network-input image.
        panels (list[dict]): each with ``name``, ``reference`` (k, 2),
            ``locations`` (k, heads, levels, points, 2) and ``weights``
            (k, heads, levels, points), normalised over ``pad_shape``.
        out_file (str): PNG path.
        pad_shape (tuple): (H, W) padded network input.
        title (str, optional): figure title.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    ph, pw = pad_shape[:2]
    scale = np.array([pw, ph], dtype=np.float64)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(6 * len(panels), 6), squeeze=False)
    colours = plt.cm.tab10.colors
    for ax, panel in zip(axes[0], panels):
        ax.imshow(image)
        loc = np.asarray(panel['locations'], dtype=np.float64) * scale
        w = np.asarray(panel['weights'], dtype=np.float64)
        ref = np.asarray(panel['reference'], dtype=np.float64) * scale
        for k in range(loc.shape[0]):
            c = colours[k % len(colours)]
            for lvl in range(loc.shape[2]):
                ax.scatter(
                    loc[k, :, lvl, :, 0].ravel(),
                    loc[k, :, lvl, :, 1].ravel(),
                    s=600 * w[k, :, lvl].ravel() + 2,
                    color=c,
                    alpha=0.6,
                    marker=LEVEL_MARKERS[lvl % len(LEVEL_MARKERS)],
                    edgecolors='white',
                    linewidths=0.5)
            ax.scatter(*ref[k], s=160, color=c, marker='x', linewidths=3)
        ax.set_xlim(0, image.shape[1])
        ax.set_ylim(image.shape[0], 0)
        ax.set_title(panel['name'], fontsize=9)
        ax.axis('off')
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)
    plt.close(fig)
