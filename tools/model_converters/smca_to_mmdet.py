"""Convert an official single-scale SMCA-DETR checkpoint
(gaopengcuhk/SMCA-DETR) to this package's ``SMCADETR``.

    python tools/model_converters/smca_to_mmdet.py SRC.pth DST.pth \
        [--config configs/smca/smca_r50_8xb2-50e_coco.py]

The 50- and 108-epoch R-50 checkpoints share one architecture, so the
default config serves both. The key map is
:func:`efficient_detr_mm.converters.smca.convert_smca`.
"""
import os.path as osp
import sys
from typing import Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))

from efficient_detr_mm.converters.base import convert_main  # noqa: E402
from efficient_detr_mm.converters.smca import (  # noqa: E402
    check_official_args, convert_smca)

DEFAULT_CONFIG = 'configs/smca/smca_r50_8xb2-50e_coco.py'


def main(argv: Optional[Sequence[str]] = None) -> None:
    convert_main(
        'official single-scale SMCA-DETR checkpoint -> SMCADETR',
        convert_smca,
        DEFAULT_CONFIG,
        argv=argv,
        check_source=check_official_args,
        source='gaopengcuhk/SMCA-DETR (single-scale) via '
        'tools/model_converters/smca_to_mmdet.py')


if __name__ == '__main__':
    main()
