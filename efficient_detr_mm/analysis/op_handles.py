"""FLOP handles for traced operators (one multiply-add = one FLOP).

The convention is fvcore's (and mmengine's ``FlopAnalyzer``, an fvcore
port): a matrix product, a linear layer or a convolution costs one FLOP per
multiply-accumulate, normalisations a few FLOPs per element, element-wise
arithmetic (``add``, ``mul``, ``softmax``, ...) nothing.  The handles here
add what fvcore / mmengine do not see or see wrongly:

* ``prim::PythonOp.MultiScaleDeformableAttnFunction`` -- mmcv's CUDA
  deformable-attention core, invisible to a trace (0 FLOPs in mmengine).
  Counted as :func:`msda_core_flops`.
* ``aten::grid_sampler`` -- by interpolation mode (bilinear 4 per output
  element, as fvcore; bicubic 16; nearest 0, a copy).
* ``aten::baddbmm`` (a masked ``bmm`` in ``nn.MultiheadAttention``),
  ``aten::scaled_dot_product_attention`` and
  ``aten::_native_multi_head_attention``, all unsupported in mmengine.
* ``aten::matmul`` with broadcasting on either side.

Every handle has the jit-handle signature ``(inputs, outputs) -> int`` of
``torch._C.Value`` lists.
"""
from math import prod
from typing import Any, Callable, Dict, List, Optional

from mmengine.analysis.jit_handles import (addmm_flop_jit, batchnorm_flop_jit,
                                           bmm_flop_jit, conv_flop_jit,
                                           einsum_flop_jit,
                                           elementwise_flop_counter,
                                           linear_flop_jit, norm_flop_counter)

Handle = Callable[[List[Any], List[Any]], int]

#: MACs per channel per sampling point of bilinear sampling (4 neighbours
#: weighted, as fvcore counts ``grid_sample``) ...
BILINEAR_MACS = 4
#: ... plus one MAC for the attention-weighted sum over the samples.
WEIGHTING_MACS = 1

#: trace name of mmcv's CUDA deformable-attention core
MSDA_FUNCTION_OP = 'prim::PythonOp.MultiScaleDeformableAttnFunction'


def shape_of(val: Any) -> Optional[List[int]]:
    """Sizes of a traced tensor value, ``None`` when unknown."""
    if val.isCompleteTensor():
        return val.type().sizes()
    return None


def msda_core_flops(batch_size: int, num_queries: int, num_heads: int,
                    head_dims: int, num_levels: int, num_points: int) -> int:
    """MACs of the core of multi-scale deformable attention.

    Every query samples ``num_levels * num_points`` points per head; each
    sample reads ``head_dims`` channels by bilinear interpolation (4 MACs
    per channel) and adds them into the output with its attention weight
    (1 MAC per channel)::

        5 * bs * nq * num_heads * head_dims * num_levels * num_points
          = 5 * bs * nq * embed_dims * num_levels * num_points

    The projections (value, offsets, attention weights, output) are linear
    layers and are counted separately.
    """
    return ((BILINEAR_MACS + WEIGHTING_MACS) * batch_size * num_queries *
            num_heads * head_dims * num_levels * num_points)


def msda_function_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """Handle of ``MultiScaleDeformableAttnFunction`` (mmcv's CUDA op).

    Its tensor inputs are ``value (bs, num_keys, heads, head_dims)``,
    ``spatial_shapes``, ``level_start_index``, ``sampling_locations (bs, nq,
    heads, levels, points, 2)`` and ``attention_weights``.
    """
    shapes = [shape_of(v) for v in inputs]
    value = next(s for s in shapes if s is not None and len(s) == 4)
    locs = next(s for s in shapes
                if s is not None and len(s) == 6 and s[-1] == 2)
    bs, nq, heads, levels, points, _ = locs
    return msda_core_flops(bs, nq, heads, value[-1], levels, points)


_GRID_SAMPLER_MACS = {0: BILINEAR_MACS, 1: 0, 2: 16}  # bilinear/nearest/cubic


def grid_sampler_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``F.grid_sample``: MACs per output element by interpolation mode."""
    mode = inputs[2].toIValue() if len(inputs) > 2 else 0
    macs = _GRID_SAMPLER_MACS.get(mode, BILINEAR_MACS)
    return macs * prod(shape_of(outputs[0]))


def matmul_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``matmul`` / ``mm``: output elements x inner dim (any broadcasting).
    """
    a = shape_of(inputs[0])
    return prod(shape_of(outputs[0])) * (a[-1] if len(a) > 1 else a[0])


def baddbmm_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``baddbmm(input, b1, b2)`` (a masked ``bmm``): the product only."""
    return prod(shape_of(outputs[0])) * shape_of(inputs[1])[-1]


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``scaled_dot_product_attention(q, k, v)``: ``q k^T`` + ``attn v``."""
    q, k, v = (shape_of(x) for x in inputs[:3])
    batch = prod(shape_of(outputs[0])[:-2])
    nq, nk = q[-2], k[-2]
    return batch * nq * nk * (q[-1] + v[-1])


def native_mha_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``_native_multi_head_attention`` (the fast path of
    ``nn.MultiheadAttention``): in-projections, ``q k^T``, ``attn v`` and
    the output projection."""
    q, k = shape_of(inputs[0]), shape_of(inputs[1])
    embed = q[-1]
    nq = prod(q[:-1])
    nk = prod(k[:-1])
    lq = q[-2] if len(q) == 3 else q[0]
    lk = k[-2] if len(k) == 3 else k[0]
    bs = nq // lq
    return (nq * embed * embed + 2 * nk * embed * embed +
            2 * bs * lq * lk * embed + nq * embed * embed)


def default_op_handles() -> Dict[str, Optional[Handle]]:
    """The op handles the counter uses unless told otherwise."""
    return {
        'aten::addmm': addmm_flop_jit,
        'aten::bmm': bmm_flop_jit,
        'aten::baddbmm': baddbmm_flop_jit,
        'aten::_convolution': conv_flop_jit,
        'aten::einsum': einsum_flop_jit,
        'aten::matmul': matmul_flop_jit,
        'aten::mm': matmul_flop_jit,
        'aten::linear': linear_flop_jit,
        'aten::batch_norm': batchnorm_flop_jit,
        'aten::group_norm': norm_flop_counter(2),
        'aten::layer_norm': norm_flop_counter(2),
        'aten::instance_norm': norm_flop_counter(1),
        'aten::upsample_nearest2d': elementwise_flop_counter(0, 1),
        'aten::upsample_bilinear2d': elementwise_flop_counter(0, 4),
        'aten::adaptive_avg_pool2d': elementwise_flop_counter(1, 0),
        'aten::grid_sampler': grid_sampler_flop_jit,
        'aten::scaled_dot_product_attention': sdpa_flop_jit,
        'aten::_native_multi_head_attention': native_mha_flop_jit,
        MSDA_FUNCTION_OP: msda_function_flop_jit,
    }
