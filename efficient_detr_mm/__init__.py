"""efficient_detr_mm: efficient-DETR papers as MMDetection 3.x modules.

Importing the package registers every module in mmdet's registries, so

    custom_imports = dict(imports=['efficient_detr_mm'],
                          allow_failed_imports=False)

in a config is all a user needs.
"""
from .runtime import allow_mmengine_checkpoints
from .version import __version__

allow_mmengine_checkpoints()

from . import (act, analysis, common, converters, datasets,  # noqa: E402,F401
               focus_detr, lite_detr, smca, visualization)

__all__ = ['__version__']
