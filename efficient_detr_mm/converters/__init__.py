"""Official checkpoints -> this package's models.

``base`` holds what every converter shares (safe loading, the COCO id map,
key bookkeeping that fails on any key left over, checking against the built
model, writing the mmdet checkpoint); one module per source format holds its
key map.  The command-line entry points are thin scripts in
``tools/model_converters/``.
"""
from .base import (COCO_IDS, ConversionError, StateDictConverter,
                   check_against_model, coco_class_rows, convert_main,
                   save_converted)

__all__ = [
    'COCO_IDS', 'ConversionError', 'StateDictConverter',
    'check_against_model', 'coco_class_rows', 'convert_main',
    'save_converted'
]
