"""A checkpoint hook that survives being killed at any moment.

mmengine's :class:`~mmengine.hooks.CheckpointHook` removes the oldest
checkpoint *before* it writes the new one, and writes the new one in place.
With ``max_keep_ckpts=1`` a kill (SIGKILL, OOM killer, pre-emption) during a
save therefore leaves no loadable checkpoint at all, and ``last_checkpoint``
names a deleted file, so ``--resume`` fails.

:class:`AtomicCheckpointHook` keeps mmengine's options and file names and
changes only the order of the file operations:

1. the checkpoint is written to ``<name>.tmp`` and flushed to the disk,
2. renamed to ``<name>`` (``os.replace`` is atomic),
3. ``last_checkpoint`` is replaced the same way (temporary file + rename),
4. only then are checkpoints beyond ``max_keep_ckpts`` removed.

A final name therefore always holds a complete checkpoint and
``last_checkpoint`` always names an existing, complete one, so any runner
resumes.  When a run resumes automatically (``--resume`` without a path),
``before_run`` also picks up a save that was complete when the previous run
was killed but not yet recorded (a kill between 1 and 3): a newer
``<name>`` of the same file-name template, or a ``<name>.tmp`` that checks
as a complete file, becomes ``last_checkpoint``.  A kill between 3 and 4
leaves one checkpoint too many on disk; the saved ``keep_ckpt_ids`` still
lists it, so the resumed run removes it (mmengine's ``before_train``).
Incomplete ``*.pth.tmp`` files are removed when training starts.  With a
non-local backend (object storage, where a put is all-or-nothing) the
checkpoint is written directly, still before anything is removed.
"""
import os
import os.path as osp
import re
import zipfile
from collections import deque
from typing import Optional

from mmdet.registry import HOOKS
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.hooks import CheckpointHook

#: suffix of a checkpoint (or ``last_checkpoint``) being written
TMP_SUFFIX = '.tmp'


def _fsync(path: str) -> None:
    """Flush a file (or a directory entry) to the disk."""
    flags = os.O_RDONLY
    if osp.isdir(path):
        flags |= getattr(os, 'O_DIRECTORY', 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. directories cannot be opened on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old or the new
    content, never a partial one."""
    tmp = path + TMP_SUFFIX
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync(osp.dirname(osp.abspath(path)))


def is_complete_zip(path: str) -> bool:
    """Whether ``path`` is a complete zip archive (what ``torch.save``
    writes): a truncated one has no central directory or fails its CRCs."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


def newest_complete_checkpoint(out_dir: str, filename_tmpl: str,
                               last: Optional[str]) -> Optional[str]:
    """The newest complete checkpoint of ``filename_tmpl`` (e.g.
    ``epoch_{}.pth``) in ``out_dir`` that is not older than ``last``: a
    final name is complete by construction, a ``.tmp`` one is checked and
    renamed into place.  ``last`` when nothing newer is found.

    Files older (by modification time) than ``last`` are ignored, so that
    checkpoints of an earlier run in the same directory are never taken.
    """
    pattern = re.compile('^' + re.escape(filename_tmpl).replace(
        re.escape('{}'), r'(\d+)') + '(' + re.escape(TMP_SUFFIX) + ')?$')
    last_step, last_mtime = -1, -float('inf')
    if last is not None and osp.isfile(last):
        m = pattern.match(osp.basename(last))
        if m is None or osp.dirname(osp.abspath(last)) != osp.abspath(
                out_dir):
            return last  # not this hook's file: leave it alone
        last_step, last_mtime = int(m.group(1)), osp.getmtime(last)
    found = []
    for name in os.listdir(out_dir):
        m = pattern.match(name)
        path = osp.join(out_dir, name)
        if m and int(m.group(1)) > last_step and \
                osp.getmtime(path) >= last_mtime:
            found.append((int(m.group(1)), m.group(2) is None, path))
    for _, final, path in sorted(found, reverse=True):
        if final:
            return path
        if is_complete_zip(path):
            dst = path[:-len(TMP_SUFFIX)]
            os.replace(path, dst)
            return dst
    return last


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """:class:`~mmengine.hooks.CheckpointHook` whose saves are crash-safe:
    write to a temporary file, rename into place, update
    ``last_checkpoint``, and only then remove old checkpoints.

    Takes exactly the arguments of mmengine's ``CheckpointHook``.  Note that
    with ``max_keep_ckpts=k`` up to ``k + 1`` checkpoints are on disk while a
    new one is being saved.  ``save_best`` checkpoints are written the
    mmengine way (they are not used by ``--resume``).
    """

    def _local_out_dir(self, runner) -> Optional[str]:
        """The checkpoint directory (as ``before_train`` computes it) when
        it is on the local file system, else ``None``."""
        out_dir = runner.work_dir if self.out_dir is None else self.out_dir
        if out_dir != runner.work_dir:
            out_dir = osp.join(out_dir,
                               osp.basename(runner.work_dir.rstrip(osp.sep)))
        backend = get_file_backend(out_dir, backend_args=self.backend_args)
        return out_dir if isinstance(backend, LocalBackend) else None

    def before_run(self, runner) -> None:
        """On an automatic resume, make ``last_checkpoint`` name the newest
        complete checkpoint (a save the killed run had finished but not yet
        recorded)."""
        super().before_run(runner)
        auto_resume = getattr(runner, '_resume', False) and getattr(
            runner, '_load_from', None) is None
        out_dir = self._local_out_dir(runner)
        if not (auto_resume and out_dir and is_main_process()
                and osp.isdir(out_dir)):
            return
        save_file = osp.join(runner.work_dir, 'last_checkpoint')
        last = None
        if osp.isfile(save_file):
            with open(save_file) as f:
                last = f.read().strip() or None
        newest = newest_complete_checkpoint(out_dir, self.filename_tmpl,
                                            last)
        if newest is not None and newest != last:
            atomic_write_text(save_file, newest)
            runner.logger.info(
                f'{newest} was saved completely by the interrupted run but '
                'not yet recorded in last_checkpoint: resuming from it')

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self.max_keep_ckpts > 0:
            # no maxlen: this hook drops ids itself, after the save
            self.keep_ckpt_ids = deque(self.keep_ckpt_ids)
        if self._is_local() and is_main_process() and osp.isdir(
                self.out_dir):
            for name in os.listdir(self.out_dir):
                if name.endswith('.pth' + TMP_SUFFIX):  # a killed save
                    os.remove(osp.join(self.out_dir, name))

    def _is_local(self) -> bool:
        return isinstance(self.file_backend, LocalBackend)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        to_remove = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            ids = list(self.keep_ckpt_ids) + [step]
            # the checkpoint records the ids still to be removed too: a run
            # resumed from it removes them if this one is killed first
            runner.message_hub.update_info('keep_ckpt_ids', ids)
            to_remove = ids[:-self.max_keep_ckpts]
            self.keep_ckpt_ids = deque(ids[-self.max_keep_ckpts:])

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        local = self._is_local()
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename + TMP_SUFFIX if local else ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        runner.message_hub.update_info('keep_ckpt_ids',
                                       list(self.keep_ckpt_ids))

        # model-parallel-like training saves on every rank; the files are
        # the main process's
        if not is_main_process():
            return
        if local:
            tmp = self.last_ckpt + TMP_SUFFIX
            _fsync(tmp)
            os.replace(tmp, self.last_ckpt)
            _fsync(self.out_dir)
        atomic_write_text(
            osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)

        for old in to_remove:
            path = self.file_backend.join_path(self.out_dir,
                                               self.filename_tmpl.format(old))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):
                # checkpoints saved by deepspeed are directories
                self.file_backend.rmtree(path)
