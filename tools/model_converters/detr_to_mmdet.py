"""Convert an official DETR / DETR-DC5 checkpoint (facebookresearch/detr)
to this package's mmdet DETR (``EffDETR``; ACT loads it too).

    python tools/model_converters/detr_to_mmdet.py SRC DST [--config CFG]

Default config: configs/detr/detr_r50-dc5_8xb2-500e_coco.py when the file
name contains ``dc5`` (e.g. ``detr-r50-dc5-f0fb7ef5.pth``), else
configs/detr/detr_r50_8xb2-150e_coco.py; pass ``--config`` for any other
model (R-101, a renamed file).  The key map lives in
``efficient_detr_mm/converters/detr.py``.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

from efficient_detr_mm.converters.detr import main  # noqa: E402

if __name__ == '__main__':
    main()
