"""What every official-checkpoint converter shares.

A converter is a function ``convert(src_state) -> StateDictConverter``: it
takes each source tensor exactly once (``take`` / ``move`` /
``move_prefix``), declares deliberate drops (``drop``, e.g. aliases stored
twice), and :func:`convert_main` then checks the result against the model
built from the config: any source key not consumed, any model key not
filled, any unexpected or mis-shaped key is an error that names the keys.
"""
import argparse
import os
import os.path as osp
import re
import tempfile
from collections import OrderedDict
from typing import (Callable, Dict, Iterable, List, Mapping, Optional,
                    Sequence, Union)

import torch
from torch import Tensor

from ..runtime import safe_load

#: the 80 COCO category ids in mmdet's class order
COCO_IDS: List[int] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21,
    22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42,
    43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
    62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90
]


def coco_class_rows(extra: Sequence[int] = ()) -> Tensor:
    """Row indices that turn a classifier indexed by COCO id (91 or 92 rows,
    DETR / DINO code bases) into mmdet's 80 contiguous classes, followed by
    ``extra`` rows (e.g. DETR's no-object row 91)."""
    return torch.tensor(list(COCO_IDS) + list(extra), dtype=torch.long)


class ConversionError(ValueError):
    """A checkpoint does not convert exactly; the message names the keys."""


def _fmt(keys: Iterable[str], limit: int = 20) -> str:
    keys = sorted(keys)
    more = f' ... and {len(keys) - limit} more' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


class StateDictConverter:
    """Bookkeeping for one conversion: every source key is consumed exactly
    once, every output key written once.

    Args:
        src (Mapping[str, Tensor]): the official state dict.
    """

    def __init__(self, src: Mapping[str, Tensor]):
        self.src = OrderedDict(src)
        self.out: 'OrderedDict[str, Tensor]' = OrderedDict()
        self.consumed = set()
        self.dropped: Dict[str, str] = {}

    # -- reading the source -------------------------------------------
    def keys(self, pattern: str = '') -> List[str]:
        """Source keys matching the regular expression ``pattern`` (from the
        start of the key) that are not consumed yet."""
        rx = re.compile(pattern)
        return [
            k for k in self.src if k not in self.consumed and rx.match(k)
        ]

    def take(self, key: str) -> Tensor:
        if key not in self.src:
            raise ConversionError(f'source checkpoint has no key {key!r}')
        if key in self.consumed:
            raise ConversionError(f'source key {key!r} consumed twice')
        self.consumed.add(key)
        return self.src[key]

    def drop(self, pattern: str, reason: str) -> int:
        """Consume the source keys matching ``pattern`` without writing them
        (aliases, optimizer-only buffers); returns how many."""
        keys = self.keys(pattern)
        for k in keys:
            self.consumed.add(k)
            self.dropped[k] = reason
        return len(keys)

    # -- writing the output -------------------------------------------
    def put(self, key: str, value: Tensor) -> None:
        if key in self.out:
            raise ConversionError(f'model key {key!r} written twice')
        self.out[key] = value

    def move(self,
             src_key: str,
             dst_key: str,
             fn: Optional[Callable[[Tensor], Tensor]] = None) -> None:
        value = self.take(src_key)
        self.put(dst_key, fn(value) if fn is not None else value)

    def move_prefix(self,
                    src_prefix: str,
                    dst_prefix: str,
                    rename: Optional[Callable[[str], str]] = None) -> int:
        """Move every unconsumed key starting with ``src_prefix`` to
        ``dst_prefix`` + (``rename`` of) the rest; returns how many."""
        n = 0
        for k in self.keys(re.escape(src_prefix)):
            rest = k[len(src_prefix):]
            self.move(k, dst_prefix + (rename(rest) if rename else rest))
            n += 1
        return n

    def unconsumed(self) -> List[str]:
        return [k for k in self.src if k not in self.consumed]


def check_against_model(conv: StateDictConverter,
                        model_state: Mapping[str, Tensor],
                        ignore_missing: Sequence[str] = ()) -> None:
    """Raise :class:`ConversionError` naming every source key not consumed,
    model key not filled (other than those matching ``ignore_missing``),
    key the model does not have, and tensor of the wrong shape."""
    problems = []
    left = conv.unconsumed()
    if left:
        problems.append(f'{len(left)} source keys not converted: '
                        f'{_fmt(left)}')
    ign = [re.compile(p) for p in ignore_missing]
    missing = [
        k for k in model_state
        if k not in conv.out and not any(p.match(k) for p in ign)
    ]
    if missing:
        problems.append(f'{len(missing)} model keys not filled: '
                        f'{_fmt(missing)}')
    unexpected = [k for k in conv.out if k not in model_state]
    if unexpected:
        problems.append(f'{len(unexpected)} converted keys the model does '
                        f'not have: {_fmt(unexpected)}')
    shapes = [
        f'{k}: converted {tuple(v.shape)} vs model '
        f'{tuple(model_state[k].shape)}' for k, v in conv.out.items()
        if k in model_state and tuple(v.shape) != tuple(model_state[k].shape)
    ]
    if shapes:
        problems.append(f'{len(shapes)} shape mismatches: '
                        + '; '.join(shapes[:20]))
    if problems:
        raise ConversionError('checkpoint does not convert exactly:\n  ' +
                              '\n  '.join(problems))


def save_converted(state: Mapping[str, Tensor], dst: str,
                   dataset_meta: Optional[dict], **meta) -> None:
    """Write ``dict(state_dict=..., meta=dict(dataset_meta=..., **meta))``
    to ``dst`` through a temporary file renamed into place, so that an
    interrupted conversion never leaves a truncated checkpoint."""
    out_dir = osp.dirname(osp.abspath(dst))
    os.makedirs(out_dir, exist_ok=True)
    payload = dict(
        state_dict=OrderedDict((k, v.contiguous()) for k, v in state.items()),
        meta=dict(dataset_meta=dataset_meta, **meta))
    fd, tmp = tempfile.mkstemp(prefix='.converting-', dir=out_dir)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(payload, f)
        os.replace(tmp, dst)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def coco_dataset_meta() -> dict:
    """mmdet's COCO ``dataset_meta`` (class names and palette)."""
    from mmdet.datasets import CocoDataset
    meta = CocoDataset.METAINFO
    return dict(classes=tuple(meta['classes']), palette=list(meta['palette']))


def build_model_state(config: str) -> Dict[str, Tensor]:
    """State dict of the (randomly initialised) model of ``config``."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    import efficient_detr_mm  # noqa: F401  (registers the modules)
    register_all_modules()
    cfg = Config.fromfile(config)
    cfg.model.pop('init_cfg', None)
    backbone = cfg.model.get('backbone', {})
    if isinstance(backbone, dict):
        backbone.pop('init_cfg', None)  # no pretrained download
    return MODELS.build(cfg.model).state_dict()


def load_source_state(path: str) -> 'OrderedDict[str, Tensor]':
    """The model state dict of an official checkpoint file, loaded without
    executing any pickle (``weights_only=True``, see
    :func:`efficient_detr_mm.runtime.safe_load`)."""
    ckpt = safe_load(path)
    if isinstance(ckpt, Mapping):
        for key in ('model', 'state_dict'):
            if key in ckpt and isinstance(ckpt[key], Mapping):
                ckpt = ckpt[key]
                break
    if not isinstance(ckpt, Mapping) or not all(
            isinstance(v, Tensor) for v in ckpt.values()):
        raise ConversionError(
            f'{path}: no state dict of tensors found (expected the tensors '
            "themselves or under 'model' / 'state_dict')")
    return OrderedDict(ckpt)


def convert_main(description: str,
                 convert: Callable[[Mapping[str, Tensor]],
                                   StateDictConverter],
                 default_config: Union[str, Callable[[Mapping[str, Tensor]],
                                                     str]],
                 argv: Optional[Sequence[str]] = None,
                 source: str = '',
                 ignore_missing: Sequence[str] = ()) -> None:
    """The command line every converter shares:
    ``SRC DST [--config CFG]``.

    ``default_config`` is a config path (relative to the repository root
    or absolute) or a function of the source state dict that picks one.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('src', help='official checkpoint')
    parser.add_argument('dst', help='output checkpoint (mmdet format)')
    parser.add_argument(
        '--config',
        help='config of the model the checkpoint is for (default: chosen '
        'from the checkpoint)')
    args = parser.parse_args(argv)
    if not osp.isfile(args.src):
        parser.error(f'no such checkpoint: {args.src}')
    src = load_source_state(args.src)
    print(f'loaded {len(src)} tensors from {args.src}')
    config = args.config
    if config is None:
        config = (default_config(src)
                  if callable(default_config) else default_config)
        if not osp.isabs(config):
            config = osp.join(REPO_ROOT, config)
    if not osp.isfile(config):
        parser.error(f'no such config: {config}')
    conv = convert(src)
    print(f'config: {config}')
    check_against_model(conv, build_model_state(config), ignore_missing)
    if conv.dropped:
        reasons = sorted(set(conv.dropped.values()))
        print(f'dropped {len(conv.dropped)} source tensors: ' +
              '; '.join(reasons))
    save_converted(
        conv.out,
        args.dst,
        coco_dataset_meta(),
        source=osp.basename(args.src),
        converter=source or description,
        config=osp.relpath(config, REPO_ROOT)
        if config.startswith(REPO_ROOT) else config)
    print(f'wrote {len(conv.out)} tensors ({len(conv.consumed)} source '
          f'tensors consumed, every model key filled) -> {args.dst}')


REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
