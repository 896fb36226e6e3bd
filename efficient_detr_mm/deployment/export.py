"""ONNX export of a detector's batch-1 inference at a fixed input size.

:class:`ExportWrapper` turns a built detector into a module of one tensor:
a (1, 3, H, W) float32 image, pixel values 0-255 in the channel order the
config's pipeline loads (BGR for mmcv's ``LoadImageFromFile``), goes through
the model's own ``data_preprocessor`` (channel flip, normalisation) and the
detector's normal ``predict`` (backbone to post-processed boxes, with
``rescale`` at scale factor 1); the outputs are what mmdet's ``predict``
puts in ``pred_instances`` for that input: ``boxes`` (k, 4) x1y1x2y2 in
input pixels, ``scores`` (k,) and ``labels`` (k,) int64, k = the config's
``test_cfg.max_per_img``.

The graph is traced with the TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``): it goes through mmdet's Python
objects (data samples, ``InstanceData``) unchanged, and mmdet's
``torch.onnx.is_in_onnx_export()`` hooks apply.  Shapes that follow from
the input size (feature maps, Focus-DETR's token budgets of an unpadded
image) are constants of the graph; data-dependent sizes (ACT's number of
clusters) stay tensors (ONNX ``NonZero``).  Deformable attention runs the
pure-PyTorch ``grid_sample`` path on CPU (mmcv's and ours), so the graph
holds standard ONNX operators only (:func:`custom_ops` checks it).

ACT draws random hash projections per call; for export every
:class:`ACTAttention` gets a seed (its own, else ``act_seed + layer``, the
convention of ``ACTDETR``'s ``act_cfg.seed``) and the projections that
seed gives are drawn once and stored as constants of the graph
(:meth:`ACTAttention.fix_hash_projections`); the PyTorch reference runs
with the same ones.
"""
from typing import Dict, List, Sequence, Tuple

import torch
from mmdet.models.detectors import DetectionTransformer
from mmengine.config import Config
from torch import Tensor, nn

from ..act.act_attention import act_modules
from ..analysis.inputs import make_batch

#: output names of the exported graph, in order
OUTPUT_NAMES = ('boxes', 'scores', 'labels')
INPUT_NAME = 'image'
DEFAULT_OPSET = 17


class ExportWrapper(nn.Module):
    """A detector as a function of one fixed-size batch-1 image tensor.

    Args:
        model (nn.Module): built mmdet DETR-family detector (eval mode).
        shape (tuple[int, int]): input (H, W).
    """

    def __init__(self, model: nn.Module, shape: Tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.shape = (int(shape[0]), int(shape[1]))

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(1, 3, H, W) float image (0-255) -> boxes, scores, labels."""
        batch = make_batch([image[0]])
        # image meta from Python ints: sizes read off a traced tensor
        # become graph values, and mmdet's post-processing would clamp the
        # boxes to whatever the trace made of them
        batch['data_samples'][0].set_metainfo(
            dict(img_shape=self.shape, ori_shape=self.shape))
        data = self.model.data_preprocessor(batch, False)
        results = self.model(
            data['inputs'], data['data_samples'], mode='predict')
        pred = results[0].pred_instances
        return pred.bboxes, pred.scores, pred.labels


def pad_size_divisor(cfg: Config) -> int:
    """The ``pad_size_divisor`` of the config's data preprocessor (1 when
    it has none)."""
    pre = cfg.model.get('data_preprocessor') or {}
    return int(pre.get('pad_size_divisor', 1) or 1)


def check_input_shape(cfg: Config, shape: Sequence[int]) -> Tuple[int, int]:
    """Validate the export input size; return it as ``(H, W)``.

    The graph has no padding step, so H and W must be multiples of the
    data preprocessor's ``pad_size_divisor`` (otherwise the model would see
    a padded image with a padding mask, which a fixed graph does not
    reproduce).

    Raises:
        ValueError: naming the problem.
    """
    if len(shape) != 2:
        raise ValueError(f'shape must be (H, W), got {tuple(shape)}')
    h, w = (int(s) for s in shape)
    if h < 1 or w < 1:
        raise ValueError(f'shape must be positive, got {h} x {w}')
    div = pad_size_divisor(cfg)
    if h % div or w % div:
        fix = (-(-h // div) * div, -(-w // div) * div)
        raise ValueError(
            f'input shape {h} x {w} is not divisible by the model\'s '
            f'data_preprocessor.pad_size_divisor={div} (the exported graph '
            f'has no padding step); use e.g. {fix[0]} x {fix[1]}')
    return h, w


def check_exportable(model: nn.Module) -> None:
    """Only mmdet DETR-family detectors are supported."""
    if not isinstance(model, DetectionTransformer):
        raise ValueError(
            f'{type(model).__name__} is not a DETR-family detector (mmdet '
            'DetectionTransformer); the exporter supports DETR, '
            'Deformable-DETR, DINO and this package\'s detectors')


def fix_act_hashes(model: nn.Module, seed: int = 0) -> List[int]:
    """Give every ACT attention of ``model`` fixed hash projections.

    An attention with a seed keeps it; one without gets ``seed + i`` (i its
    index among the model's ACT attentions).  Returns the seeds used (empty
    when the model has no ACT attention).
    """
    seeds = []
    for i, m in enumerate(act_modules(model)):
        if m.seed is None:
            m.seed = int(seed) + i
        m.fix_hash_projections()
        seeds.append(m.seed)
    return seeds


def prepare_model(model: nn.Module, act_seed: int = 0) -> Dict:
    """Make ``model`` deterministic for export (ACT hashes fixed); returns
    a description of what was fixed."""
    check_exportable(model)
    model.eval()
    return dict(act_seeds=fix_act_hashes(model, act_seed))


def run_pytorch(wrapper: nn.Module, image: Tensor) -> Dict[str, Tensor]:
    """The wrapper's outputs (the PyTorch reference) as a dict."""
    with torch.no_grad():
        outs = wrapper(image)
    return dict(zip(OUTPUT_NAMES, (o.detach() for o in outs)))


def export_onnx(wrapper: ExportWrapper,
                image: Tensor,
                out: str,
                opset: int = DEFAULT_OPSET) -> None:
    """Trace ``wrapper`` on ``image`` and write the ONNX model to ``out``.

    Args:
        wrapper (ExportWrapper): the model to export.
        image (Tensor): (1, 3, H, W) float example input of the wrapper's
            shape (its values only steer the trace; sizes that depend on
            them stay dynamic).
        out (str): output ``.onnx`` path.
        opset (int): ONNX opset (>= 16 for ``GridSample`` and
            ``ScatterElements`` with reduction).
    """
    if tuple(image.shape) != (1, 3) + wrapper.shape:
        raise ValueError(f'example image must be (1, 3, {wrapper.shape[0]}, '
                         f'{wrapper.shape[1]}), got {tuple(image.shape)}')
    if opset < 16:
        raise ValueError(f'opset must be >= 16 (GridSample, ScatterElements '
                         f'with reduction), got {opset}')
    import warnings
    with torch.no_grad(), warnings.catch_warnings():
        # the trace freezes every Python number derived from the input
        # size, which is intended (a fixed-size graph)
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        warnings.simplefilter('ignore', DeprecationWarning)
        warnings.simplefilter('ignore', UserWarning)
        torch.onnx.export(
            wrapper, (image, ),
            out,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES))


def custom_ops(onnx_path: str) -> List[str]:
    """Operators of the ONNX model outside the standard domains (should be
    empty: no custom op)."""
    import onnx
    model = onnx.load(onnx_path)
    graphs = [model.graph]
    found = set()
    while graphs:
        g = graphs.pop()
        for node in g.node:
            if node.domain not in ('', 'ai.onnx'):
                found.add(f'{node.domain}::{node.op_type}')
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
    return sorted(found)


def op_types(onnx_path: str) -> List[str]:
    """Sorted distinct operator types of the ONNX model's main graph."""
    import onnx
    return sorted({n.op_type for n in onnx.load(onnx_path).graph.node})
