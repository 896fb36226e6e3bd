"""ACT (Adaptive Clustering Transformer) and MTKD, BMVC 2021."""
from .act_attention import (ACTAttention, act_enabled, act_modules,
                            prototype_stats)
from .clustering import (broadcast, cluster_ids, cluster_means, e2lsh_codes,
                         pack_codes, sample_projections)
from .detector import ACTDETR
from .mtkd import MTKDHook, MTKDLoss

__all__ = [
    'ACTAttention', 'ACTDETR', 'MTKDHook', 'MTKDLoss', 'act_enabled',
    'act_modules', 'prototype_stats', 'broadcast', 'cluster_ids',
    'cluster_means', 'e2lsh_codes', 'pack_codes', 'sample_projections'
]
