"""FLOP counting that sees deformable attention and paper modules.

Counting is trace based (``torch.jit`` trace, fvcore / mmengine handles, one
multiply-add = one FLOP, see :mod:`.op_handles`) plus a per-module override
protocol:

* a module MAY define ``flop_count(self, args, kwargs, output) -> int``,
  the multiply-adds of one call (its own linear projections included);
* the counter registers ``register_forward_hook(..., with_kwargs=True)`` on
  every module, so it sees each call's ``args`` / ``kwargs`` / ``output``;
* the traced operators inside a module that has an override are dropped
  (every traced node knows the chain of module scopes it ran in) and the
  override's number is added instead; an override module called inside
  another one is covered by the outer one;
* mmcv's ``MultiScaleDeformableAttention`` (and subclasses that keep its
  ``forward``) get a built-in override, :func:`msda_module_flop_count`, so
  its count does not depend on the device (on CPU the trace sees
  ``grid_sample`` but not the weighted sum; on CUDA it sees one opaque
  ``PythonOp``).  A subclass that replaces ``forward`` must define
  ``flop_count``; without one it falls back to the trace (with a warning).

The split is by caller: an operator counts for ``backbone`` / ``neck`` /
``encoder`` / ``decoder`` / ``head`` when it runs (directly or deeper)
inside a call of the detector's ``backbone`` / ``neck`` / ``encoder`` /
``decoder`` / ``bbox_head``; everything else (query selection in
``pre_decoder``, positional encodings, ``memory_trans_fc``, a paper's extra
top-level modules, ...) is ``other``, so the rows add up to ``total``.
E.g. DINO's per-layer box refinement (``bbox_head.reg_branches`` called by
the decoder) is decoder; its encoder-output classifier called by
``pre_decoder`` is other.
"""
import inspect
import warnings
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmcv.ops import MultiScaleDeformableAttention
from torch import Tensor, nn

from .op_handles import Handle, default_op_handles, msda_core_flops

#: (top-level module name of a detector, row of the split)
DETECTOR_PARTS: Tuple[Tuple[str, str], ...] = (('backbone', 'backbone'),
                                               ('neck', 'neck'),
                                               ('encoder', 'encoder'),
                                               ('decoder', 'decoder'),
                                               ('bbox_head', 'head'))
OTHER = 'other'
TOTAL = 'total'
_ROOT = '__root__'

OverrideFn = Callable[[nn.Module, tuple, dict, Any], int]


def linear_flops(layer: nn.Linear, num_tokens: int) -> int:
    """MACs of ``layer`` applied to ``num_tokens`` vectors (bias free, as
    fvcore counts ``aten::linear``)."""
    return int(num_tokens) * layer.in_features * layer.out_features


def num_tokens(x: Tensor) -> int:
    """Number of vectors in ``x`` (all elements but the last dim)."""
    return int(x.numel() // x.shape[-1])


def bind_call(module: nn.Module, args: tuple, kwargs: dict) -> dict:
    """``args`` / ``kwargs`` of a forward call as ``{parameter: value}``,
    defaults included."""
    bound = inspect.signature(module.forward).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def msda_module_flop_count(module: MultiScaleDeformableAttention,
                           args: tuple, kwargs: dict, output: Any) -> int:
    """MACs of one call of mmcv's ``MultiScaleDeformableAttention``.

    With ``nq`` queries, ``nv`` values (all images of the batch together),
    ``C = embed_dims``, ``H`` heads, ``L`` levels, ``P`` points::

        value_proj         nv * C * C
        sampling_offsets   nq * C * (H * L * P * 2)
        attention_weights  nq * C * (H * L * P)
        core               5 * nq * C * L * P   (see msda_core_flops)
        output_proj        nq * C * C

    The softmax, the reference-point arithmetic and the residual add are
    element-wise (0, fvcore convention).
    """
    call = bind_call(module, args, kwargs)
    query = call['query']
    value = call.get('value')
    value = query if value is None else value
    nq, nv = num_tokens(query), num_tokens(value)
    bs = query.shape[0] if module.batch_first else query.shape[1]
    heads = module.num_heads
    core = msda_core_flops(bs, nq // bs, heads, module.embed_dims // heads,
                           module.num_levels, module.num_points)
    return (linear_flops(module.value_proj, nv) +
            linear_flops(module.sampling_offsets, nq) +
            linear_flops(module.attention_weights, nq) +
            linear_flops(module.output_proj, nq) + core)


def builtin_overrides() -> Dict[type, OverrideFn]:
    """Overrides the toolkit provides for classes that are not ours."""
    return {MultiScaleDeformableAttention: msda_module_flop_count}


def resolve_override(
        module: nn.Module,
        builtins: Dict[type, OverrideFn]) -> Optional[Callable[..., int]]:
    """The ``(args, kwargs, output) -> int`` override of ``module``, if any.

    The module's own ``flop_count`` wins; then a built-in override of a
    class it derives from, provided it keeps that class's ``forward``.
    """
    own = getattr(module, 'flop_count', None)
    if callable(own):
        return own
    for cls, fn in builtins.items():
        if isinstance(module, cls):
            if type(module).forward is cls.forward:
                return partial(fn, module)
            warnings.warn(
                f'{type(module).__name__} replaces {cls.__name__}.forward '
                'but defines no flop_count(args, kwargs, output); it is '
                'counted from the trace, which may miss its deformable '
                'sampling')
    return None


@dataclass
class FlopResult:
    """What one count gives.

    Attributes:
        by_part (OrderedDict[str, int]): MACs per row of the split, ``other``
            and ``total`` included; the rows before ``total`` add up to it.
        by_op (Counter[str]): MACs per traced operator (outside overrides)
            and per overriding class (``override:<Class>``).
        override_calls (Counter[str]): number of overridden calls per class.
        unsupported (Counter[str]): traced operators without a handle (0
            FLOPs, e.g. element-wise ops), number of nodes.
        dropped (Counter[str]): traced MACs per operator inside overridden
            modules, replaced by the overrides.
    """
    by_part: 'OrderedDict[str, int]'
    by_op: Counter = field(default_factory=Counter)
    override_calls: Counter = field(default_factory=Counter)
    unsupported: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.by_part[TOTAL]


class _TraceCall(nn.Module):
    """Traceable wrapper: tensors of the top-level args / kwargs become the
    trace inputs, the rest is bound as constants; outputs are flattened to
    a tuple of tensors.  The target is a child (its parameters must be
    module parameters for the tracer); scope names come from the counter's
    own hooks, so they stay those of the target."""

    def __init__(self, target: nn.Module, args: tuple, kwargs: dict) -> None:
        super().__init__()
        self.target = target
        self._args, self._kwargs = args, kwargs
        self.arg_idx = [i for i, a in enumerate(args) if torch.is_tensor(a)]
        self.kw_keys = [k for k, v in kwargs.items() if torch.is_tensor(v)]

    def trace_inputs(self) -> tuple:
        return tuple([self._args[i] for i in self.arg_idx] +
                     [self._kwargs[k] for k in self.kw_keys])

    def forward(self, *tensors: Tensor) -> Tuple[Tensor, ...]:
        args, kwargs = list(self._args), dict(self._kwargs)
        n = len(self.arg_idx)
        for i, t in zip(self.arg_idx, tensors[:n]):
            args[i] = t
        for k, t in zip(self.kw_keys, tensors[n:]):
            kwargs[k] = t
        return tuple(_flatten_tensors(self.target(*args, **kwargs)))


def _scoped_forward(forward: Callable, name: str, stack: List[str],
                    push: Callable, module: nn.Module) -> Callable:
    """``forward`` that pushes scope ``name`` unless the module's hooks
    already did (direct ``module.forward(...)`` calls)."""

    def wrapped(*args, **kwargs):
        if stack and stack[-1] == name:
            return forward(*args, **kwargs)
        push(name, module, args)
        try:
            return forward(*args, **kwargs)
        finally:
            stack.pop()
            state = torch._C._get_tracing_state()
            if state:
                state.pop_scope()

    return wrapped


def _flatten_tensors(x: Any) -> List[Tensor]:
    if torch.is_tensor(x):
        return [x]
    if isinstance(x, dict):
        x = list(x.values())
    if isinstance(x, (list, tuple)):
        return [t for item in x for t in _flatten_tensors(item)]
    return []


class FlopCounter:
    """Counts the MACs of one call of ``model`` with a split by part.

    Args:
        model (nn.Module): the model; for a detector, called as
            ``model(inputs, data_samples, mode='tensor')``.
        parts (Sequence[tuple[str, str]]): (top-level module name, row name)
            pairs of the split; defaults to :data:`DETECTOR_PARTS`.
        op_handles (dict, optional): op kind -> handle, replacing
            :func:`default_op_handles` (``None`` values remove a handle).
        builtins (dict, optional): class -> override function, replacing
            :func:`builtin_overrides`.
        use_overrides (bool): if False, ignore every override (module
            ``flop_count`` and built-ins) and count the plain trace.
    """

    def __init__(self,
                 model: nn.Module,
                 parts: Sequence[Tuple[str, str]] = DETECTOR_PARTS,
                 op_handles: Optional[Dict[str, Optional[Handle]]] = None,
                 builtins: Optional[Dict[type, OverrideFn]] = None,
                 use_overrides: bool = True) -> None:
        self.model = model
        self.parts = OrderedDict(parts)
        handles = default_op_handles()
        handles.update(op_handles or {})
        self.op_handles = {k: v for k, v in handles.items() if v is not None}
        self.builtins = builtin_overrides() if builtins is None else builtins
        self.use_overrides = use_overrides

    def rows(self) -> List[str]:
        return list(self.parts.values()) + [OTHER, TOTAL]

    def _part_of(self, chain: Sequence[str]) -> str:
        for name in chain:
            if name in self.parts:
                return self.parts[name]
        return OTHER

    def count(self, *args, **kwargs) -> FlopResult:
        """Trace ``model(*args, **kwargs)`` once and count it."""
        by_part = OrderedDict((r, 0) for r in self.rows())
        result = FlopResult(by_part=by_part)
        stack: List[str] = []
        overrides: Dict[str, Callable[..., int]] = {}
        handles = []

        def push(name, module, inputs):
            stack.append(name)
            state = torch._C._get_tracing_state()
            if state:
                state.push_scope(name)

        def pop(name, module, call_args, call_kwargs, output):
            stack.pop()
            state = torch._C._get_tracing_state()
            if state:
                state.pop_scope()
            fn = overrides.get(name)
            if fn is None or any(s in overrides for s in stack):
                return
            try:
                macs = int(fn(call_args, call_kwargs, output))
            except Exception as e:
                raise RuntimeError(f'flop_count of {name or _ROOT} '
                                   f'({type(module).__name__}) failed: '
                                   f'{e}') from e
            cls = type(module).__name__
            part = self._part_of(stack + [name])
            result.by_part[part] += macs
            result.by_op[f'override:{cls}'] += macs
            result.override_calls[cls] += 1

        seen = set()
        for name, module in self.model.named_modules():
            if module in seen:
                continue
            seen.add(module)
            name = name or _ROOT
            if self.use_overrides:
                fn = resolve_override(module, self.builtins)
                if fn is not None:
                    overrides[name] = fn
            handles.append(
                module.register_forward_pre_hook(partial(push, name)))
            handles.append(
                module.register_forward_hook(
                    partial(pop, name), with_kwargs=True))
        # mmdet calls some parts as ``part.forward(...)`` (e.g.
        # ``bbox_head.forward`` in ``_forward``), which skips module hooks:
        # wrap those parts' ``forward`` so the scope is pushed either way.
        wrapped_parts = []
        for part in self.parts:
            module = getattr(self.model, part, None)
            if isinstance(module, nn.Module):
                wrapped_parts.append((module, module.__dict__.get('forward')))
                module.forward = _scoped_forward(module.forward, part, stack,
                                                 push, module)
        wrapper = _TraceCall(self.model, args, kwargs)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.filterwarnings(
                    'ignore', category=torch.jit.TracerWarning)
                graph, _ = torch.jit._get_trace_graph(wrapper,
                                                      wrapper.trace_inputs())
        finally:
            for h in handles:
                h.remove()
            for module, own_forward in wrapped_parts:
                del module.forward
                if own_forward is not None:  # an instance-level forward
                    module.forward = own_forward
        self._count_graph(graph, set(overrides), result)
        result.by_part[TOTAL] = sum(v for k, v in result.by_part.items()
                                    if k != TOTAL)
        return result

    def _count_graph(self, graph: Any, overridden: set,
                     result: FlopResult) -> None:
        for node in graph.nodes():
            kind = node.kind()
            if kind == 'prim::PythonOp':
                kind = f'{kind}.{node.pyname()}'
            elif kind.startswith('prim::'):
                continue
            handle = self.op_handles.get(kind)
            chain = [s for s in node.scopeName().split('/') if s]
            if handle is None:
                result.unsupported[kind] += 1
                continue
            macs = handle(list(node.inputs()), list(node.outputs()))
            if isinstance(macs, Counter):
                macs = sum(macs.values())
            macs = int(macs)
            op = kind.split('::', 1)[-1]
            if any(s in overridden for s in chain):
                result.dropped[op] += macs
                continue
            result.by_part[self._part_of(chain)] += macs
            result.by_op[op] += macs


def count_flops(model: nn.Module, *args, **kwargs) -> FlopResult:
    """Count one call ``model(*args, **kwargs)`` with default settings."""
    return FlopCounter(model).count(*args, **kwargs)


def count_detector_flops(model: nn.Module, inputs: Tensor,
                         data_samples: list) -> FlopResult:
    """Count a DETR-family detector's ``_forward`` (``mode='tensor'``: up to
    the head outputs of every decoder layer, no post-processing), split into
    backbone / neck / encoder / decoder / head / other / total."""
    return FlopCounter(model).count(inputs, data_samples, mode='tensor')


def params_by_part(model: nn.Module,
                   parts: Sequence[Tuple[str, str]] = DETECTOR_PARTS
                   ) -> 'OrderedDict[str, int]':
    """Parameter count per row of the split (by ownership)."""
    names = OrderedDict(parts)
    rows = OrderedDict((r, 0) for r in list(names.values()) + [OTHER, TOTAL])
    for pname, p in model.named_parameters():
        rows[names.get(pname.split('.')[0], OTHER)] += p.numel()
        rows[TOTAL] += p.numel()
    return rows
