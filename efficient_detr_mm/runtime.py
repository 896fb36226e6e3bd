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
* Every checkpoint the package, ``tools/`` and mmengine's runner load from
  a local file goes through :func:`safe_load` (``weights_only=True`` passed
  explicitly, so even ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` cannot turn it
  off): :func:`use_safe_checkpoint_loader` registers it as mmengine's
  loader for local paths (``load_from``, ``--resume``, ``tools/test.py``,
  ``load_checkpoint``) and makes mmengine's remote loaders weights-only
  too; :func:`load_checkpoint` is mmengine's ``load_checkpoint`` with
  those loaders in place.
* Distributed training on CPU: mmengine's pytorch launcher calls
  ``torch.cuda.set_device`` and wraps the model with ``device_ids``; both
  fail without CUDA.  :func:`setup_cpu_distributed` initialises a gloo group
  first and registers a DDP wrapper that drops ``device_ids`` for CPU
  modules.  :func:`check_launcher_env` turns a launcher started without its
  environment (``--launcher pytorch`` outside torchrun) into a clear error.
* Loading weights: mmengine's runner loads ``load_from`` (and the checkpoint
  of ``tools/test.py``) with ``strict=False``: a checkpoint of another model
  or class count loads with a warning and evaluates to an mAP near 0.
  :class:`StrictLoadRunner` (used by ``tools/train.py`` and
  ``tools/test.py``) refuses any missing, unexpected or mis-shaped key,
  naming them, unless ``partial_load = True`` is set in the config (the
  tools' ``--partial-load``).
"""
import argparse
import contextlib
import functools
import os
import os.path as osp
import pickle
import re
from typing import List, Mapping

import numpy as np
import torch
import torch.distributed as dist
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import (BaseTTAModel, MMDistributedDataParallel,
                            is_model_wrapper)
from mmengine.registry import MODEL_WRAPPERS, RUNNERS
from mmengine.runner import Runner
from mmengine.runner.checkpoint import (_load_checkpoint,
                                        _load_checkpoint_to_model)


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


def _load_local_checkpoint(filename: str, map_location=None):
    """mmengine's loader for local paths, through :func:`safe_load`."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_load(filename, map_location=map_location)


@contextlib.contextmanager
def _weights_only_forced():
    """Within the block, a ``torch.load`` that does not pass
    ``weights_only`` loads with ``weights_only=True`` even if the
    environment asks for the opposite."""
    keys = ('TORCH_FORCE_WEIGHTS_ONLY_LOAD',
            'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
    saved = {k: os.environ.get(k) for k in keys}
    os.environ['TORCH_FORCE_WEIGHTS_ONLY_LOAD'] = '1'
    os.environ.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _safe_scheme(loader):
    """Wrap one of mmengine's remote loaders (http, pavi, ceph, ...) so that
    its ``torch.load`` is weights-only with the allow-list."""
    if getattr(loader, '_efficient_detr_mm_safe', False):
        return loader

    @functools.wraps(loader)
    def safe(filename, *args, **kwargs):
        allow_mmengine_checkpoints()
        with _weights_only_forced():
            try:
                return loader(filename, *args, **kwargs)
            except pickle.UnpicklingError as err:
                raise pickle.UnpicklingError(
                    f'{filename}: refused to load (it needs a type outside '
                    'the safe allow-list; nothing from it was executed): '
                    f'{err}') from None

    safe._efficient_detr_mm_safe = True
    return safe


def use_safe_checkpoint_loader() -> None:
    """Make every loader of mmengine's ``CheckpointLoader`` (what ``Runner``
    uses for ``load_from``, resuming and ``init_cfg`` weights, and what
    ``mmengine.runner.load_checkpoint`` uses) weights-only: local files
    are read by :func:`safe_load`, the remote schemes (``http(s)://``,
    ``torchvision://``, ``open-mmlab://``, ...) run with weights-only
    forced.  Idempotent; done when the package is imported."""
    from mmengine.runner.checkpoint import CheckpointLoader
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        safe = (_load_local_checkpoint
                if prefix == '' else _safe_scheme(loader))
        if loader is not safe:
            CheckpointLoader.register_scheme(
                prefixes=prefix, loader=safe, force=True)


def load_checkpoint(model, filename: str, map_location='cpu',
                    strict: bool = False, **kwargs) -> dict:
    """``mmengine.runner.load_checkpoint`` that never executes a pickle
    (local files are read by :func:`safe_load`)."""
    from mmengine.runner.checkpoint import load_checkpoint as _load
    use_safe_checkpoint_loader()
    return _load(model, filename, map_location=map_location, strict=strict,
                 **kwargs)


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


#: environment variables each launcher's process-group set-up reads
LAUNCHER_ENV = {
    'pytorch': ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
    'slurm': ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
    'mpi': ('OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE',
            'OMPI_COMM_WORLD_LOCAL_RANK'),
}

_LAUNCHER_HINT = {
    'pytorch': 'start it with tools/dist_train.sh CONFIG NUM_PROCS (or '
    'torchrun --nproc_per_node=NUM_PROCS tools/train.py CONFIG --launcher '
    'pytorch), or drop --launcher for a single process',
    'slurm': 'start it with tools/slurm_train.sh (srun), or drop --launcher '
    'for a single process',
    'mpi': 'start it with mpirun, or drop --launcher for a single process',
}


def check_launcher_env(launcher: str) -> None:
    """Raise ``RuntimeError`` naming the missing variables when
    ``launcher`` is used without the environment its launcher sets (mmengine
    would fail with ``KeyError: 'RANK'``)."""
    missing = [
        v for v in LAUNCHER_ENV.get(launcher, ()) if v not in os.environ
    ]
    if missing:
        raise RuntimeError(
            f'--launcher {launcher} needs the environment its launcher sets, '
            f'but {", ".join(missing)} {"is" if len(missing) == 1 else "are"}'
            f' not set: {_LAUNCHER_HINT[launcher]}')


def setup_cpu_distributed(cfg, launcher: str) -> None:
    """Check the launcher's environment and prepare ``cfg`` for a
    multi-process CPU run (no-op with CUDA or without a launcher)."""
    check_launcher_env(launcher)
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


def check_amp_available() -> None:
    """``--amp``: mmengine's ``AmpOptimWrapper`` needs a CUDA (or NPU / MLU
    / MUSA) device; refuse early with a clear message on a CPU-only
    machine."""
    from mmengine.device import (is_cuda_available, is_mlu_available,
                                 is_musa_available, is_npu_available)
    if not (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available()):
        raise RuntimeError(
            '--amp (mixed precision) needs a CUDA device (mmengine\'s '
            'AmpOptimWrapper), but none is available: train without --amp '
            'on this machine')


class CheckpointMismatchError(RuntimeError):
    """A checkpoint whose keys or shapes do not match the model."""


def _fmt_keys(keys: List[str], limit: int = 10) -> str:
    more = f', ... ({len(keys) - limit} more)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def state_dict_mismatch(model_state: Mapping[str, torch.Tensor],
                        ckpt_state: Mapping[str, torch.Tensor]) -> List[str]:
    """Describe every difference between a model's and a checkpoint's state
    dicts: missing keys (BatchNorm's ``num_batches_tracked`` counters aside,
    which older checkpoints lack), unexpected keys and shape mismatches.
    Empty when they match."""
    missing = [
        k for k in model_state
        if k not in ckpt_state and not k.endswith('num_batches_tracked')
    ]
    unexpected = [k for k in ckpt_state if k not in model_state]
    shapes = [
        f'{k} (checkpoint {tuple(v.shape)}, model '
        f'{tuple(model_state[k].shape)})' for k, v in ckpt_state.items()
        if k in model_state and hasattr(v, 'shape')
        and tuple(v.shape) != tuple(model_state[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f'{len(missing)} missing keys: {_fmt_keys(missing)}')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected keys: '
                        f'{_fmt_keys(unexpected)}')
    if shapes:
        problems.append(f'{len(shapes)} mis-shaped keys: '
                        f'{_fmt_keys(shapes)}')
    return problems


@RUNNERS.register_module()
class StrictLoadRunner(Runner):
    """mmengine's ``Runner`` whose checkpoint loading (``load_from``, the
    checkpoint of ``tools/test.py``, ``--resume``) is strict: a checkpoint
    with a missing, unexpected or mis-shaped key raises
    :class:`CheckpointMismatchError` naming them, instead of loading what
    matches with a warning.  ``partial_load = True`` in the config (the
    tools' ``--partial-load``) asks for mmengine's partial loading on
    purpose, e.g. to fine-tune on another class count.
    """

    partial_load: bool = False

    @classmethod
    def from_cfg(cls, cfg) -> 'StrictLoadRunner':
        partial = cfg.get('partial_load', False)
        if not isinstance(partial, bool):
            raise ValueError(
                f'partial_load must be True or False, got {partial!r}')
        runner = super().from_cfg(cfg)
        runner.partial_load = partial
        return runner

    def load_checkpoint(self,
                        filename: str,
                        map_location='cpu',
                        strict: bool = None,
                        revise_keys: list = [(r'^module.', '')]):
        """mmengine's ``Runner.load_checkpoint``; ``strict`` defaults to
        ``not partial_load``."""
        if strict is None:
            strict = not self.partial_load
        checkpoint = _load_checkpoint(filename, map_location=map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(
            self.model) else self.model
        if isinstance(model, BaseTTAModel):
            model = model.module
        if strict:
            state = checkpoint.get('state_dict', checkpoint)
            for pattern, repl in revise_keys:
                state = {re.sub(pattern, repl, k): v for k, v in state.items()}
            problems = state_dict_mismatch(model.state_dict(), state)
            if problems:
                raise CheckpointMismatchError(
                    f'{filename} does not match the model '
                    f'({type(model).__name__}):\n  ' + '\n  '.join(problems)
                    + '\nTo load only the matching weights on purpose, pass '
                    '--partial-load (tools/train.py, tools/test.py) or set '
                    'partial_load = True in the config.')
        _load_checkpoint_to_model(
            model, checkpoint, strict, revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint
