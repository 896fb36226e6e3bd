"""Runtime compatibility for the pinned stack (torch 2.13 + mmengine 0.10.7).

* Checkpoints: torch >= 2.6 loads with ``weights_only=True`` by default and
  mmengine 0.10.7 calls ``torch.load`` without the argument, so a resume
  checkpoint (which pickles mmengine's ``HistoryBuffer`` and numpy arrays in
  its message hub) fails to load.  :func:`allow_mmengine_checkpoints` adds
  exactly those classes to torch's safe-globals allow-list; loading stays in
  the safe ``weights_only`` mode (no arbitrary code runs).  ``HistoryBuffer``
  pickles its statistics methods as ``getattr(HistoryBuffer, 'min')``;
  allowing ``builtins.getattr`` itself would open the door to any attribute
  (``getattr.__self__`` is the builtins module), so the name is mapped to
  :func:`_history_buffer_getattr`, which resolves only those methods.
* Distributed training on CPU: mmengine's pytorch launcher calls
  ``torch.cuda.set_device`` and wraps the model with ``device_ids``; both
  fail without CUDA.  :func:`setup_cpu_distributed` initialises a gloo group
  first and registers a DDP wrapper that drops ``device_ids`` for CPU
  modules.
"""
import argparse
import os
import pickle

import numpy as np
import torch
import torch.distributed as dist
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


def _numpy_safe_globals() -> list:
    """numpy objects that appear in mmengine's message hub."""
    from numpy.core.multiarray import _reconstruct, scalar  # noqa
    names = [_reconstruct, scalar, np.ndarray, np.dtype]
    # numpy >= 1.25 pickles dtypes as instances of np.dtypes.*DType
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        names += [
            getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')
        ]
    return names


# the statistics HistoryBuffer registers for every instance
_HISTORY_BUFFER_STATS = {'min', 'max', 'current', 'mean'}


def _history_buffer_getattr(obj, name: str):
    """``getattr`` restricted to the statistics methods of HistoryBuffer
    (what a pickled message hub asks for)."""
    allowed = _HISTORY_BUFFER_STATS | set(HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'refusing getattr({obj!r}, {name!r}) while loading a checkpoint')


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` read mmengine checkpoints."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # torch < 2.4 loads everything anyway
        return
    add([HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr')] +
        _numpy_safe_globals() + _OFFICIAL_CHECKPOINT_TYPES)


#: types official checkpoints pickle besides tensors: the DETR / DINO code
#: bases save their ``argparse.Namespace`` of arguments
_OFFICIAL_CHECKPOINT_TYPES = [argparse.Namespace]


def safe_load(path: str, map_location='cpu'):
    """``torch.load`` that never executes a pickle: ``weights_only=True``
    with the allow-list of :func:`allow_mmengine_checkpoints` and the types
    official checkpoints contain.  A file that needs anything else fails
    with an error naming the file and the refused global."""
    allow_mmengine_checkpoints()
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(
            f'{path}: refused to load (it needs a type outside the safe '
            f'allow-list; nothing from it was executed): {err}') from None


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that also works for CPU modules (gloo):
    the ``device_ids`` mmengine always passes are dropped when the module's
    parameters are not on a CUDA device."""

    def __init__(self, module, device_ids=None, **kwargs):
        on_cuda = any(p.is_cuda for p in module.parameters())
        super().__init__(
            module=module,
            device_ids=device_ids if on_cuda else None,
            **kwargs)


def setup_cpu_distributed(cfg, launcher: str) -> None:
    """Prepare ``cfg`` for a multi-process CPU run (no-op with CUDA or
    without a launcher)."""
    if launcher == 'none' or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        dist.init_process_group(
            backend='gloo',
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']))
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper['type'] = 'CPUDistributedDataParallel'
    wrapper.setdefault('find_unused_parameters',
                       cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
