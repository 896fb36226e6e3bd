from .loading import ImageLoadError, LoadImageFromFile
from .shapes import (SHAPES_CLASSES, SHAPES_PALETTE, generate_split,
                     make_shapes_dataset, use_shapes_root)

__all__ = [
    'ImageLoadError', 'LoadImageFromFile', 'SHAPES_CLASSES',
    'SHAPES_PALETTE', 'generate_split', 'make_shapes_dataset',
    'use_shapes_root'
]
