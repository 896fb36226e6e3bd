from .shapes import (SHAPES_CLASSES, SHAPES_PALETTE, generate_split,
                     make_shapes_dataset)

__all__ = [
    'SHAPES_CLASSES', 'SHAPES_PALETTE', 'generate_split', 'make_shapes_dataset'
]
