"""Side-by-side latency / memory benchmark of several detectors.

Every model is built once; all of them then run on the same images
(preprocessed once per model by its own ``data_preprocessor``, outside the
timing), interleaved: after the warm-up, round ``r`` runs every model once,
starting with model ``r mod n`` so no model always runs first.  One run is
``model(inputs, data_samples, mode='predict')`` under ``no_grad`` (and
autocast with ``fp16``): backbone to post-processed boxes, as mmdet's
inference benchmark times it, minus the data preprocessing.

Stage times (``breakdown``) wrap the detector's methods on the instance:

=================  ==============================================
backbone+neck      ``extract_feat``
encoder            ``forward_encoder``
query selection    ``pre_decoder``
decoder            ``forward_decoder``
head+post          ``bbox_head.predict`` (head on the last layer, top-k,
                   box decoding, rescale)
other              run time minus the stages (``pre_transformer``: masks
                   and positional encodings, ``add_pred_to_datasample``)
=================  ==============================================

On CUDA a stage is timed with CUDA events (no extra synchronisation inside
the run) and the run with ``synchronize`` + wall clock; on CPU everything
with the wall clock.

A run may instead be any callable (``ModelRun.call``), e.g. an ONNX Runtime
session on the same image (``tools/analysis_tools/benchmark.py --backend
onnxruntime``); such runs are timed as a whole (no stage breakdown) and
their latency ratio is taken to the first run of the same ``backend``.

Peak memory is the model's own state (parameters + buffers) plus the peak
above the level before the run: on CUDA from the caching allocator
(``max_memory_allocated``) during the timed runs, on CPU from the process
RSS, sampled every millisecond in one extra, untimed run per model after
freed heap memory was returned to the system (``malloc_trim``); the CPU
number is a coarse estimate.
"""
import ctypes
import gc
import statistics
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

#: (stage name, attribute path on the detector)
STAGES = (('backbone+neck', 'extract_feat'), ('encoder', 'forward_encoder'),
          ('query selection', 'pre_decoder'), ('decoder', 'forward_decoder'),
          ('head+post', 'bbox_head.predict'))
OTHER_STAGE = 'other'


def summarize(values: Sequence[float]) -> dict:
    """Median, quartiles, min and max of ``values``."""
    v = sorted(values)
    if len(v) >= 2:
        q1, _, q3 = statistics.quantiles(v, n=4, method='inclusive')
    else:
        q1 = q3 = v[0]
    return dict(
        median=statistics.median(v), q1=q1, q3=q3, min=v[0], max=v[-1])


class StageTimer:
    """Times named methods of a model while :attr:`enabled`.

    Args:
        device (torch.device): CUDA events are used on a CUDA device.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == 'cuda'
        self.enabled = False
        self._events: Dict[str, list] = {}
        self._restore: List[Callable[[], None]] = []

    def wrap(self, model: nn.Module, path: str, stage: str) -> bool:
        """Time ``model.<path>`` as ``stage``; False if it does not exist.
        """
        *owners, attr = path.split('.')
        obj = model
        for name in owners:
            obj = getattr(obj, name, None)
        method = getattr(obj, attr, None)
        if method is None or not callable(method):
            return False

        def timed(*args, **kwargs):
            if not self.enabled:
                return method(*args, **kwargs)
            start = self._now()
            try:
                return method(*args, **kwargs)
            finally:
                self._events.setdefault(stage, []).append(
                    (start, self._now()))

        setattr(obj, attr, timed)
        self._restore.append(lambda: delattr(obj, attr))
        return True

    def _now(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def start(self) -> None:
        self._events = {}
        self.enabled = True

    def stop(self) -> Dict[str, float]:
        """Milliseconds per stage of the run since :meth:`start` (the
        caller has synchronised the device)."""
        self.enabled = False
        out = {}
        for stage, pairs in self._events.items():
            if self.cuda:
                ms = sum(s.elapsed_time(e) for s, e in pairs)
            else:
                ms = sum(e - s for s, e in pairs) * 1e3
            out[stage] = ms
        return out

    def remove(self) -> None:
        for undo in self._restore:
            undo()
        self._restore = []


def _rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * _PAGE


try:
    import os
    _PAGE = os.sysconf('SC_PAGE_SIZE')
    _rss_bytes()
    HAVE_RSS = True
except (OSError, ValueError, AttributeError):  # not Linux
    HAVE_RSS = False


def _malloc_trim() -> None:
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RssSampler:
    """Peak process RSS while active, sampled in a thread."""

    def __init__(self, interval: float = 1e-3) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> 'RssSampler':
        self.peak = _rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def state_bytes(model: nn.Module) -> int:
    """Bytes of parameters and buffers."""
    return sum(t.numel() * t.element_size()
               for t in list(model.parameters()) + list(model.buffers()))


@dataclass
class ModelRun:
    """One model of a benchmark and its measurements.

    ``model(data['inputs'], data['data_samples'], mode='predict')`` is
    timed, or ``call()`` when given (then ``state_nbytes`` is the model's
    size, e.g. of its ONNX file, and ``model`` may be None).
    """
    name: str
    model: Optional[nn.Module]
    data: Optional[dict]
    latencies: List[float] = field(default_factory=list)
    stages: Dict[str, List[float]] = field(default_factory=dict)
    mem_bytes: int = 0
    timer: Optional[StageTimer] = None
    call: Optional[Callable[[], Any]] = None
    backend: str = 'pytorch'
    state_nbytes: Optional[int] = None

    def state(self) -> int:
        """Bytes of the model's own state."""
        if self.state_nbytes is not None:
            return self.state_nbytes
        return state_bytes(self.model)


class Benchmark:
    """Interleaved latency / memory benchmark.

    Args:
        runs (list[ModelRun]): built models (eval, on ``device``) with their
            preprocessed ``data`` (``inputs`` / ``data_samples``).
        device (str): 'cpu' or 'cuda'.
        fp16 (bool): run under autocast (float16 on CUDA, bfloat16 on CPU).
        breakdown (bool): time the stages of :data:`STAGES`.
        log (callable): progress printer.
    """

    def __init__(self,
                 runs: List[ModelRun],
                 device: str = 'cpu',
                 fp16: bool = False,
                 breakdown: bool = False,
                 log: Callable[[str], None] = print) -> None:
        self.runs = runs
        self.device = torch.device(device)
        self.cuda = self.device.type == 'cuda'
        self.fp16 = fp16
        self.breakdown = breakdown
        self.log = log
        if breakdown:
            for run in runs:
                if run.call is not None:
                    continue
                run.timer = StageTimer(self.device)
                for stage, path in STAGES:
                    run.timer.wrap(run.model, path, stage)

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def _autocast(self):
        if not self.fp16:
            return nullcontext()
        dtype = torch.float16 if self.cuda else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def _forward(self, run: ModelRun) -> None:
        if run.call is not None:
            run.call()
            return
        with torch.no_grad(), self._autocast():
            run.model(run.data['inputs'], run.data['data_samples'],
                      mode='predict')

    def _timed(self, run: ModelRun) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
        if run.timer is not None:
            run.timer.start()
        self._sync()
        t0 = time.perf_counter()
        self._forward(run)
        self._sync()
        ms = (time.perf_counter() - t0) * 1e3
        run.latencies.append(ms)
        if run.timer is not None:
            stages = run.timer.stop()
            stages[OTHER_STAGE] = ms - sum(stages.values())
            for k, v in stages.items():
                run.stages.setdefault(k, []).append(v)
        if self.cuda:
            peak = torch.cuda.max_memory_allocated(self.device) - base
            run.mem_bytes = max(run.mem_bytes,
                                peak + run.state())

    def _cpu_memory(self, run: ModelRun) -> None:
        gc.collect()
        _malloc_trim()
        with RssSampler() as s:
            base = _rss_bytes()
            self._forward(run)
        run.mem_bytes = s.peak - base + run.state()

    def run(self, warmup: int = 3, repeats: int = 10) -> None:
        """Warm up every model, then ``repeats`` interleaved rounds."""
        n = len(self.runs)
        for i in range(warmup):
            for run in self.runs:
                self._forward(run)
            self._sync()
            self.log(f'[warm-up {i + 1}/{warmup}] done')
        for r in range(repeats):
            order = self.runs[r % n:] + self.runs[:r % n]
            for run in order:
                self._timed(run)
            self.log(f'[round {r + 1}/{repeats}] ' + ' | '.join(
                f'{run.name} {run.latencies[-1]:.1f} ms'
                for run in self.runs))
        if not self.cuda and HAVE_RSS:
            for run in self.runs:
                self._cpu_memory(run)
        for run in self.runs:
            if run.timer is not None:
                run.timer.remove()

    def results(self, batch_size: int) -> List[dict]:
        """Per model: latency summary (ms), images/s at the median, peak
        memory (MiB), median-latency ratio to the first model of the same
        backend and, with ``breakdown``, the stage summaries."""
        first = {}
        for run in self.runs:
            first.setdefault(run.backend, statistics.median(run.latencies))
        out = []
        for run in self.runs:
            lat = summarize(run.latencies)
            res = dict(
                name=run.name,
                backend=run.backend,
                latency_ms=lat,
                latencies_ms=list(run.latencies),
                images_per_s=1e3 * batch_size / lat['median'],
                peak_mem_mib=run.mem_bytes / 2**20 if run.mem_bytes else None,
                ratio=lat['median'] / first[run.backend])
            if run.stages:
                res['stages_ms'] = {
                    k: summarize(v)
                    for k, v in run.stages.items()
                }
            out.append(res)
        return out


def format_results(results: List[dict], title: str) -> str:
    """Latency / throughput / memory / ratio table."""
    w = max([5] + [len(r['name']) for r in results])
    head = (f'{"model":<{w}} {"median ms":>10} {"IQR ms":>17} '
            f'{"min-max ms":>17} {"img/s":>8} {"peak MiB":>9} {"ratio":>6}')
    lines = [title, head, '-' * len(head)]
    for r in results:
        lat = r['latency_ms']
        mem = (f'{r["peak_mem_mib"]:>9.0f}'
               if r['peak_mem_mib'] is not None else f'{"n/a":>9}')
        lines.append(
            f'{r["name"]:<{w}} {lat["median"]:>10.2f} '
            f'{lat["q1"]:>8.2f}-{lat["q3"]:<8.2f} '
            f'{lat["min"]:>8.2f}-{lat["max"]:<8.2f} '
            f'{r["images_per_s"]:>8.2f} {mem} {r["ratio"]:>6.2f}')
    return '\n'.join(lines)


def format_breakdown(results: List[dict]) -> str:
    """Median ms (and share of the median run) of every stage."""
    stages = [s for s, _ in STAGES] + [OTHER_STAGE]
    # runs timed as a whole (e.g. ONNX Runtime) have no stages
    results = [r for r in results if r.get('stages_ms')]
    w = max([5] + [len(r['name']) for r in results])
    head = f'{"model":<{w}}' + ''.join(f' {s:>17}' for s in stages)
    lines = ['stage breakdown: median ms (share)', head, '-' * len(head)]
    for r in results:
        st = r.get('stages_ms', {})
        total = r['latency_ms']['median']
        cells = []
        for s in stages:
            if s in st:
                m = st[s]['median']
                cells.append(f' {m:>9.2f} ({100 * m / total:>3.0f}%)')
            else:
                cells.append(f' {"-":>17}')
        lines.append(f'{r["name"]:<{w}}' + ''.join(cells))
    return '\n'.join(lines)
