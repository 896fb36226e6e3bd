"""Image loading that names the file it could not load.

mmcv's ``LoadImageFromFile`` lets the decoder's error through unchanged: a
0-byte or corrupt image stops training with OpenCV's
``(-215:Assertion failed) !buf.empty() in function 'imdecode_'``, which does
not say which of thousands of files is broken.  This subclass is registered
in mmdet's ``TRANSFORMS`` under the same name, so every
``dict(type='LoadImageFromFile')`` in an mmdet-scoped config (ours, and
mmdet's base pipelines they inherit) gets it: loading is unchanged, an error
names the file (and says when it is empty).
"""
import os.path as osp
from typing import Optional

from mmcv.transforms import LoadImageFromFile as _MMCVLoadImageFromFile
from mmdet.registry import TRANSFORMS


class ImageLoadError(RuntimeError):
    """An image file that cannot be read or decoded."""


@TRANSFORMS.register_module(name='LoadImageFromFile')
class LoadImageFromFile(_MMCVLoadImageFromFile):
    """mmcv's ``LoadImageFromFile``; a file it cannot load raises
    :class:`ImageLoadError` naming the file (``ignore_empty=True`` still
    skips it, as in mmcv)."""

    def transform(self, results: dict) -> Optional[dict]:
        filename = results['img_path']
        try:
            return super().transform(results)
        except Exception as err:
            if isinstance(filename, str) and osp.isfile(filename) and \
                    osp.getsize(filename) == 0:
                why = 'the file is empty (0 bytes)'
            else:
                why = f'{type(err).__name__}: {err}'
            raise ImageLoadError(
                f'cannot load image {filename}: {why}') from err
