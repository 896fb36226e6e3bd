"""Config -> ONNX file -> ONNX Runtime check, as one function (used by
``tools/deployment/pytorch2onnx.py``, the benchmark and the tests)."""
import os.path as osp
from typing import Callable, Dict, Optional, Sequence

from torch import Tensor

from ..analysis.inputs import build_detector, load_config, synthetic_images
from .export import (DEFAULT_OPSET, ExportWrapper, check_input_shape,
                     custom_ops, export_onnx, prepare_model, run_pytorch)
from .ort import OrtDetector, compare_detections


def load_export_model(config: str,
                      shape: Sequence[int],
                      checkpoint: Optional[str] = None,
                      act_seed: int = 0,
                      cfg_options: Optional[dict] = None) -> ExportWrapper:
    """Build the config's detector (checkpoint, else its own random
    initialisation, no download) wrapped for export at ``shape``.

    Raises:
        ValueError: unknown config, bad shape, unsupported model.
    """
    if not osp.isfile(config):
        raise ValueError(f'config file not found: {config}')
    if checkpoint and not osp.isfile(checkpoint):
        raise ValueError(f'checkpoint file not found: {checkpoint}')
    cfg = load_config(config, cfg_options)
    shape = check_input_shape(cfg, shape)
    model = build_detector(cfg, checkpoint, 'cpu')
    prepare_model(model, act_seed)
    return ExportWrapper(model, shape).eval()


def input_image(shape: Sequence[int],
                img_path: Optional[str] = None,
                seed: int = 0) -> Tensor:
    """(1, 3, H, W) float32 image: the file at ``img_path`` resized to
    ``shape`` (as loaded, BGR), or uniform noise."""
    if img_path is not None and not osp.isfile(img_path):
        raise ValueError(f'image file not found: {img_path}')
    img = synthetic_images(tuple(shape), 1, seed=seed, img_path=img_path)[0]
    return img.float()[None]


def export_and_check(config: str,
                     out: str,
                     shape: Sequence[int],
                     checkpoint: Optional[str] = None,
                     opset: int = DEFAULT_OPSET,
                     img_path: Optional[str] = None,
                     act_seed: int = 0,
                     atol: float = 1e-3,
                     top_k: int = 10,
                     cfg_options: Optional[dict] = None,
                     check_images: Sequence[Tensor] = (),
                     log: Callable[[str], None] = print) -> Dict:
    """Export ``config`` to ``out`` and compare ONNX Runtime with PyTorch.

    Args:
        config, out, shape, checkpoint, opset: see
            ``tools/deployment/pytorch2onnx.py``.
        img_path (str, optional): image traced and compared on (resized to
            ``shape``); default: a noise image.
        act_seed (int): base seed of ACT's fixed hashes.
        atol (float): score / box (pixel) tolerance of the comparison.
        top_k (int): top detections whose labels must agree.
        cfg_options (dict, optional): config overrides.
        check_images (sequence of Tensor): further (1, 3, H, W) images
            compared after export (the trace saw only the first).
        log (callable): progress printer.

    Returns:
        dict: ``comparisons`` (one :func:`compare_detections` result per
        image), ``ok`` (all agree), ``custom_ops`` (must be empty),
        ``act_seeds``.
    """
    wrapper = load_export_model(config, shape, checkpoint, act_seed,
                                cfg_options)
    image = input_image(wrapper.shape, img_path)
    images = [image] + list(check_images)
    try:
        refs = [run_pytorch(wrapper, img) for img in images]
    except (RuntimeError, ValueError, IndexError) as e:
        raise ValueError(
            f'{osp.basename(config)} does not run at input {shape[0]} x '
            f'{shape[1]} in PyTorch ({type(e).__name__}: {e}); try a larger '
            'input') from e
    log(f'exporting {osp.basename(config)} at {wrapper.shape[0]} x '
        f'{wrapper.shape[1]} (opset {opset}) to {out}')
    export_onnx(wrapper, image, out, opset)
    bad = custom_ops(out)
    if bad:
        raise RuntimeError(f'the exported graph has custom operators: {bad}')
    det = OrtDetector(out)
    comparisons = [
        compare_detections(ref, det(img), atol, top_k)
        for ref, img in zip(refs, images)
    ]
    acts = [
        m.seed for m in wrapper.modules()
        if getattr(m, 'hash_proj_q', None) is not None
    ]
    return dict(
        comparisons=comparisons,
        ok=all(c['ok'] for c in comparisons),
        custom_ops=bad,
        act_seeds=acts)


def export_for_benchmark(wrapper: ExportWrapper,
                         image: Tensor,
                         out: str,
                         opset: int = DEFAULT_OPSET,
                         atol: float = 1e-3) -> Dict:
    """Export ``wrapper`` to ``out`` and open it in ONNX Runtime, checked
    on ``image`` against PyTorch.

    Returns:
        dict: ``detector`` (:class:`OrtDetector`), ``comparison``
        (:func:`compare_detections`), ``nbytes`` (file size).
    """
    ref = run_pytorch(wrapper, image)
    export_onnx(wrapper, image, out, opset)
    det = OrtDetector(out)
    return dict(
        detector=det,
        comparison=compare_detections(ref, det(image), atol),
        nbytes=osp.getsize(out))
