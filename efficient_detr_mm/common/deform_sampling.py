"""Pure-PyTorch multi-scale deformable sampling.

The sampling half of multi-scale deformable attention, kept apart from the
weighting so that attentions which weight the samples differently (e.g. Lite
DETR's key-aware attention, which scores sampled keys against the query) can
share it.  It runs on any device through ``F.grid_sample`` (bilinear,
``align_corners=False``, zero padding), exactly as mmcv's
``multi_scale_deformable_attn_pytorch`` samples.
"""
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor


def deform_sampling_locations(reference_points: Tensor,
                              sampling_offsets: Tensor,
                              spatial_shapes: Tensor) -> Tensor:
    """Normalised sampling locations of multi-scale deformable attention.

    Args:
        reference_points (Tensor): (bs, num_queries, num_levels, 2) points
            (x, y) in [0, 1], or (bs, num_queries, num_levels, 4) boxes
            (cx, cy, w, h).
        sampling_offsets (Tensor): (bs, num_queries, num_heads, num_levels,
            num_points, 2) offsets, in pixels of each level for 2-d
            references and in units of half the box size times
            ``num_points`` for 4-d references (Deformable-DETR's convention).
        spatial_shapes (Tensor): (num_levels, 2) level shapes (h, w).

    Returns:
        Tensor: (bs, num_queries, num_heads, num_levels, num_points, 2)
        locations (x, y), 0 and 1 being the map borders.
    """
    # locations in (at least) the precision of the references, so that
    # fp16 / bf16 offsets under autocast do not round them
    sampling_offsets = sampling_offsets.to(
        torch.promote_types(sampling_offsets.dtype, reference_points.dtype))
    if reference_points.shape[-1] == 2:
        normalizer = torch.stack(
            [spatial_shapes[..., 1], spatial_shapes[..., 0]],
            -1).to(sampling_offsets.dtype)
        return (reference_points[:, :, None, :, None, :] +
                sampling_offsets / normalizer[None, None, None, :, None, :])
    if reference_points.shape[-1] == 4:
        num_points = sampling_offsets.shape[-2]
        return (reference_points[:, :, None, :, None, :2] +
                sampling_offsets / num_points *
                reference_points[:, :, None, :, None, 2:] * 0.5)
    raise ValueError('the last dim of reference_points must be 2 or 4, got '
                     f'{reference_points.shape[-1]}')


def multi_scale_bilinear_sample(
        value: Tensor, spatial_shapes: Union[Tensor, Sequence[Sequence[int]]],
        sampling_locations: Tensor) -> Tensor:
    """Bilinearly sample a multi-scale map at per-level locations.

    One ``grid_sample`` per level, for all heads at once; nothing is
    weighted or summed.  Several maps that share the locations (e.g. keys and
    values) are best concatenated along the channel axis and sampled in one
    call.

    Args:
        value (Tensor): (bs, num_keys, num_heads, channels) flattened maps of
            all levels, level after level (``num_keys = sum(h * w)``).
        spatial_shapes (Tensor | sequence): (num_levels, 2) shapes (h, w).
        sampling_locations (Tensor): (bs, num_queries, num_heads, num_levels,
            num_points, 2) locations (x, y) in [0, 1]; outside the map
            samples are zero.

    Returns:
        Tensor: (bs, num_heads, channels, num_queries, num_levels,
        num_points) samples.
    """
    bs, num_keys, num_heads, channels = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    shapes = [(int(h), int(w)) for h, w in spatial_shapes]
    if len(shapes) != num_levels:
        raise ValueError(f'{len(shapes)} spatial shapes for {num_levels} '
                         'levels of sampling locations')
    if sum(h * w for h, w in shapes) != num_keys:
        raise ValueError('spatial_shapes do not add up to the '
                         f'{num_keys} keys of value')
    maps = value.split([h * w for h, w in shapes], dim=1)
    # grid_sample wants (x, y) in [-1, 1]: (bs * heads, nq, L, P, 2)
    grids = (2 * sampling_locations - 1).transpose(1, 2).flatten(0, 1)
    # sample in the wider of the two dtypes (what autocast does), so that
    # fp16 maps do not round fp32 locations
    dtype = torch.promote_types(value.dtype, grids.dtype)
    grids = grids.to(dtype)
    samples = []
    for lvl, (h, w) in enumerate(shapes):
        # (bs, h*w, heads, c) -> (bs * heads, c, h, w)
        level_map = maps[lvl].permute(0, 2, 3, 1).reshape(
            bs * num_heads, channels, h, w).to(dtype)
        samples.append(
            F.grid_sample(
                level_map,
                grids[:, :, lvl],
                mode='bilinear',
                padding_mode='zeros',
                align_corners=False))  # (bs * heads, c, nq, P)
    return torch.stack(samples, dim=-2).view(bs, num_heads, channels,
                                             num_queries, num_levels,
                                             num_points)
