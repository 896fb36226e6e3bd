"""Backbones the official checkpoints need.

:class:`DilatedResNet` is mmdet's :class:`~mmdet.models.backbones.ResNet`
with torchvision's rule for dilated stages, the backbone of the official
DETR-DC5 (``torchvision.models.resnet50(replace_stride_with_dilation=[False,
False, True])``): the first block of a dilated stage keeps dilation 1 (it
would have done the stride-2 step) and only the later blocks dilate.
mmdet's ``ResNet(dilations=(1, 1, 1, 2))`` dilates every block of the stage,
which changes the features of the converted weights (DETR-DC5 logits move by
~0.8).  Parameter names are mmdet's ``ResNet``'s, so checkpoints of either
load into the other.
"""
from typing import Sequence

from mmdet.models.backbones import ResNet
from mmdet.registry import MODELS
from torch import nn


@MODELS.register_module()
class DilatedResNet(ResNet):
    """mmdet's ``ResNet`` whose dilated stages follow torchvision.

    Args:
        dilate_first_block (bool): dilate the first block of a stage whose
            dilation is > 1 too (mmdet's ``ResNet``).  Defaults to False:
            the first block has dilation 1, the later blocks the stage's
            dilation (torchvision's ``replace_stride_with_dilation``, the
            official DETR-DC5).
        **kwargs: :class:`~mmdet.models.backbones.ResNet`'s arguments
            (``strides``, ``dilations``, ``depth``, ...).
    """

    def __init__(self, *args, dilate_first_block: bool = False, **kwargs):
        # read by make_res_layer, which ResNet.__init__ calls
        self._dilate_first_block = bool(dilate_first_block)
        super().__init__(*args, **kwargs)

    def make_res_layer(self, **kwargs) -> nn.Module:
        """Build one stage; with a dilation > 1 and ``dilate_first_block``
        False, its first block is rebuilt with dilation 1 (same parameter
        shapes, same downsample)."""
        layer = super().make_res_layer(**kwargs)
        if kwargs.get('dilation', 1) > 1 and not self._dilate_first_block:
            first = super().make_res_layer(**dict(
                kwargs, num_blocks=1, dilation=1))[0]
            layer[0] = first
        return layer

    @property
    def block_dilations(self) -> Sequence[Sequence[int]]:
        """Dilation of the 3x3 convolution of every block, per stage (for
        checks and docs)."""
        out = []
        for name in self.res_layers:
            stage = []
            for block in getattr(self, name):
                conv = block.conv2 if hasattr(block, 'conv3') else block.conv1
                stage.append(conv.dilation[0])
            out.append(stage)
        return out
