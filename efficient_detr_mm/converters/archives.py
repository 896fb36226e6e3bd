"""Released checkpoints packed in a ``.zip`` archive.

Some authors publish ``.zip`` files (e.g. the Focus-DETR weights).  Such a
file is either a ``torch.save`` checkpoint itself (torch writes zip
archives, with a ``<name>/data.pkl`` entry) or an archive that wraps one
checkpoint file; :func:`checkpoint_in_archive` gives a path that
:func:`efficient_detr_mm.runtime.safe_load` reads in both cases.
"""
import contextlib
import os.path as osp
import tempfile
import zipfile
from typing import Iterator

from .base import ConversionError

CHECKPOINT_EXTS = ('.pth', '.pt', '.ckpt', '.bin')


def _is_torch_archive(names) -> bool:
    return any(n.count('/') == 1 and n.endswith('/data.pkl') for n in names)


@contextlib.contextmanager
def checkpoint_in_archive(path: str) -> Iterator[str]:
    """Yield ``path`` itself (a checkpoint, zipped by ``torch.save`` or
    not), or, for a zip archive that wraps exactly one checkpoint file
    (``.pth`` / ``.pt`` / ``.ckpt`` / ``.bin``), that file extracted to a
    temporary directory removed afterwards.

    Raises:
        ConversionError: an archive with no or several checkpoint files.
    """
    if not zipfile.is_zipfile(path):
        yield path
        return
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if not n.endswith('/')]
        if _is_torch_archive(names):
            yield path
            return
        inner = [
            n for n in names if n.lower().endswith(CHECKPOINT_EXTS)
            and not n.startswith('__MACOSX/')
            and not osp.basename(n).startswith('.')
        ]
        if len(inner) != 1:
            raise ConversionError(
                f'{path}: a zip archive with {len(inner)} checkpoint files '
                f'({", ".join(inner) or "none"}); expected exactly one '
                f'{" / ".join(CHECKPOINT_EXTS)} file (unzip it and pass the '
                'checkpoint itself)')
        with tempfile.TemporaryDirectory() as tmp:
            print(f'{path}: reading {inner[0]} from the archive')
            yield zf.extract(inner[0], tmp)
