"""Focus-DETR (ICCV 2023): foreground token selector, FTS supervision,
dual-attention encoder and the DINO-based detector."""
from .detector import FocusDETR
from .encoder import FocusEncoder, FocusEncoderLayer
from .fts_loss import (CODE_RANGES, PAPER_OVERLAP_RANGES, FTSLoss, fts_targets,
                       sigmoid_focal_loss, token_centers)
from .selector import ForegroundTokenSelector, FTSScorer

__all__ = [
    'FocusDETR', 'FocusEncoder', 'FocusEncoderLayer', 'FTSLoss',
    'fts_targets', 'sigmoid_focal_loss', 'token_centers', 'CODE_RANGES',
    'PAPER_OVERLAP_RANGES', 'FTSScorer', 'ForegroundTokenSelector'
]
