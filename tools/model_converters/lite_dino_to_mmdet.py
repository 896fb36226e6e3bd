# Copyright (c) efficient_detr_mm contributors.
"""Convert an official Lite-DETR checkpoint (IDEA-Research/Lite-DETR:
r50_s2ex3_49.9.pth, r50_s3ex1_50.2.pth, r50_s3ex3_50.4.pth) to a LiteDINO
checkpoint for mmdet.

    python tools/model_converters/lite_dino_to_mmdet.py SRC DST [--config CFG]

Without ``--config`` the config is chosen from the checkpoint's saved args
(enc_scale / num_expansion). The key map lives in
efficient_detr_mm/converters/lite_dino.py.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from efficient_detr_mm.converters.lite_dino import main  # noqa: E402

if __name__ == '__main__':
    main()
