"""ONNX export of the package's detectors and ONNX Runtime inference."""
from .export import (DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAMES, ExportWrapper,
                     check_exportable, check_input_shape, custom_ops,
                     export_onnx, fix_act_hashes, op_types, pad_size_divisor,
                     prepare_model, run_pytorch)
from .ort import OrtDetector, compare_detections, format_comparison
from .pipeline import export_and_check, input_image, load_export_model

__all__ = [
    'DEFAULT_OPSET', 'INPUT_NAME', 'OUTPUT_NAMES', 'ExportWrapper',
    'check_exportable', 'check_input_shape', 'custom_ops', 'export_onnx',
    'fix_act_hashes', 'op_types', 'pad_size_divisor', 'prepare_model',
    'run_pytorch', 'OrtDetector', 'compare_detections', 'format_comparison',
    'export_and_check', 'input_image', 'load_export_model'
]
