"""Efficiency toolkit: FLOP counting that sees deformable attention and
paper modules (:mod:`.flops`, :mod:`.op_handles`), synthetic detector
inputs (:mod:`.inputs`) and the latency / memory benchmark
(:mod:`.benchmark`)."""
from .flops import (DETECTOR_PARTS, FlopCounter, FlopResult, bind_call,
                    builtin_overrides, count_detector_flops, count_flops,
                    linear_flops, msda_module_flop_count, num_tokens,
                    params_by_part)
from .op_handles import (MSDA_FUNCTION_OP, default_op_handles, msda_core_flops,
                         msda_function_flop_jit)

__all__ = [
    'DETECTOR_PARTS', 'FlopCounter', 'FlopResult', 'bind_call',
    'builtin_overrides', 'count_detector_flops', 'count_flops',
    'linear_flops', 'msda_module_flop_count', 'num_tokens', 'params_by_part',
    'MSDA_FUNCTION_OP', 'default_op_handles', 'msda_core_flops',
    'msda_function_flop_jit'
]
