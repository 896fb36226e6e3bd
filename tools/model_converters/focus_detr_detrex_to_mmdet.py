"""Convert a detrex Focus-DETR checkpoint (projects/focus_detr; R-50,
R-101 or Swin-T, a .pth or the released .zip) to this package's
``FocusDETR``::

    python tools/model_converters/focus_detr_detrex_to_mmdet.py \
        focus_detr_r50_4scale_12ep.zip focus-detr_r50_12e.pth [--config CFG]

Without ``--config`` the config is chosen from the backbone in the
checkpoint and the schedule (12ep / 24ep / 36ep) in its file name.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))

from efficient_detr_mm.converters.base import convert_main  # noqa: E402
from efficient_detr_mm.converters.focus_detr_detrex import (  # noqa: E402
    convert_focus_detr_detrex, default_config)


def main(argv=None):
    convert_main(
        'detrex Focus-DETR checkpoint -> efficient_detr_mm FocusDETR',
        convert_focus_detr_detrex,
        default_config,
        argv=argv,
        source='detrex projects/focus_detr '
        '(tools/model_converters/focus_detr_detrex_to_mmdet.py)')


if __name__ == '__main__':
    main()
