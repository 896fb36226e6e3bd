"""ONNX Runtime inference of an exported detector and its comparison with
the PyTorch model."""
from typing import Dict, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .export import INPUT_NAME, OUTPUT_NAMES

ArrayLike = Union[np.ndarray, Tensor]


class OrtDetector:
    """An exported detector in an ONNX Runtime CPU session.

    Args:
        onnx_path (str): model written by :func:`export_onnx`.
        num_threads (int, optional): intra-op threads; default: PyTorch's
            ``torch.get_num_threads()`` (so both backends get the same).
    """

    def __init__(self, onnx_path: str,
                 num_threads: Optional[int] = None) -> None:
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(num_threads or
                                        torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(
            onnx_path, opts, providers=['CPUExecutionProvider'])
        self.input_shape = tuple(self.session.get_inputs()[0].shape)

    def __call__(self, image: ArrayLike) -> Dict[str, np.ndarray]:
        """(1, 3, H, W) float image -> ``boxes``, ``scores``, ``labels``."""
        if isinstance(image, Tensor):
            image = image.detach().cpu().numpy()
        image = np.ascontiguousarray(image, dtype=np.float32)
        if tuple(image.shape) != self.input_shape:
            raise ValueError(f'the exported model takes a {self.input_shape} '
                             f'image, got {tuple(image.shape)}')
        outs = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: image})
        return dict(zip(OUTPUT_NAMES, outs))


def _np(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def compare_detections(ref: Dict[str, ArrayLike],
                       out: Dict[str, ArrayLike],
                       atol: float = 1e-3,
                       top_k: int = 10) -> Dict:
    """Compare ONNX Runtime detections ``out`` with PyTorch's ``ref``.

    Both are score-sorted lists of the same length.  Scores are compared
    rank by rank.  A detection's box is compared with the reference
    detection of the same rank, or, where scores tie within ``atol`` (two
    backends may order near-equal scores differently), with the closest
    reference box of the same label among those tied scores.

    Args:
        ref, out (dict): ``boxes`` (k, 4), ``scores`` (k,), ``labels`` (k,).
        atol (float): tolerance on scores and boxes (boxes in pixels).
        top_k (int): how many top detections must agree in label.

    Returns:
        dict: ``max_score_diff``, ``max_box_diff`` (pixels), ``num`` (k),
        ``top_k``, ``top_labels_ref`` / ``top_labels_out``,
        ``top_labels_agree`` (every one of the top-k has a reference
        detection of the same label, score and box within ``atol``) and
        ``ok`` (all within ``atol`` and the top labels agree).
    """
    rb, rs, rl = (_np(ref[k]) for k in OUTPUT_NAMES)
    ob, os_, ol = (_np(out[k]) for k in OUTPUT_NAMES)
    res = dict(num=int(len(rs)), top_k=int(min(top_k, len(rs))))
    if rb.shape != ob.shape or rs.shape != os_.shape or rl.shape != ol.shape:
        res.update(
            ok=False,
            max_score_diff=float('inf'),
            max_box_diff=float('inf'),
            top_labels_agree=False,
            error=f'output shapes differ: PyTorch {rb.shape} {rs.shape} vs '
            f'ONNX Runtime {ob.shape} {os_.shape}')
        return res
    score_diff = np.abs(rs.astype(np.float64) - os_.astype(np.float64))
    box_diff = np.zeros(len(rs))
    label_ok = np.ones(len(rs), dtype=bool)
    for i in range(len(rs)):
        same = np.abs(rb[i].astype(np.float64) - ob[i]).max()
        if rl[i] == ol[i] and same <= atol:
            box_diff[i] = same
            continue
        # ties: reference detections of the same label and a score within
        # atol of this one
        cand = np.nonzero((np.abs(rs - os_[i]) <= atol) & (rl == ol[i]))[0]
        if len(cand) == 0:
            box_diff[i] = same
            label_ok[i] = rl[i] == ol[i]
            continue
        box_diff[i] = np.abs(rb[cand].astype(np.float64) -
                             ob[i]).max(axis=1).min()
    k = res['top_k']
    top_agree = bool(label_ok[:k].all() and (box_diff[:k] <= atol).all()
                     and (score_diff[:k] <= atol).all())
    res.update(
        max_score_diff=float(score_diff.max()) if len(rs) else 0.0,
        max_box_diff=float(box_diff.max()) if len(rs) else 0.0,
        top_labels_ref=rl[:k].tolist(),
        top_labels_out=ol[:k].tolist(),
        top_labels_agree=top_agree)
    res['ok'] = bool(top_agree and res['max_score_diff'] <= atol
                     and res['max_box_diff'] <= atol)
    return res


def format_comparison(res: Dict) -> str:
    """Human-readable summary of :func:`compare_detections`."""
    if 'error' in res:
        return f'MISMATCH: {res["error"]}'
    lines = [
        f'max |score diff| = {res["max_score_diff"]:.3g}, '
        f'max |box diff| = {res["max_box_diff"]:.3g} px '
        f'({res["num"]} detections)',
        f'top-{res["top_k"]} labels PyTorch      {res["top_labels_ref"]}',
        f'top-{res["top_k"]} labels ONNX Runtime {res["top_labels_out"]}',
        ('top detections agree' if res['top_labels_agree'] else
         'top detections DO NOT agree'),
    ]
    return '\n'.join(lines)
