"""Convert a detrex Focus-DETR checkpoint (projects/focus_detr; R-50,
R-101 or Swin-T, a .pth or the released .zip) to this package's
``FocusDETR``::

    python tools/model_converters/focus_detr_detrex_to_mmdet.py \
        focus_detr_r50_4scale_12ep.zip focus-detr_r50_12e.pth [--config CFG]

Without ``--config`` the config is chosen from the backbone in the
checkpoint and the schedule (12ep / 24ep / 36ep) in its file name.  The key
map lives in ``efficient_detr_mm/converters/focus_detr_detrex.py``.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))

from efficient_detr_mm.converters.focus_detr_detrex import main  # noqa: E402

if __name__ == '__main__':
    main()
