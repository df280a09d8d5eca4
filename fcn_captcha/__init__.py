"""fcn_captcha: read text CAPTCHAs with a padded fully convolutional center-map detector.

The public API, one name per line (name -> module). Names are imported on first use,
so that light modules (the generator, used by every data-generation worker process)
do not pull in JAX.
"""

import importlib

_EXPORTS = {
    "align": "fcn_captcha.annotate",
    "annotate_folder": "fcn_captcha.annotate",
    "ARCHITECTURES": "fcn_captcha.config",
    "build_model": "fcn_captcha.model",
    "calibrate": "fcn_captcha.calibration",
    "Calibrator": "fcn_captcha.confidence",
    "CenterCaptcha": "fcn_captcha.generator",
    "center_accuracy": "fcn_captcha.annotate",
    "CenterNet": "fcn_captcha.model",
    "Char": "fcn_captcha.decoder",
    "CheckpointError": "fcn_captcha.checkpoint",
    "Cleanup": "fcn_captcha.cleanup",
    "Config": "fcn_captcha.config",
    "Dataset": "fcn_captcha.dataset",
    "decode": "fcn_captcha.decoder",
    "decode_device": "fcn_captcha.device_decoder",
    "Detector": "fcn_captcha.detector",
    "evaluate_folder": "fcn_captcha.evaluate",
    "expected_calibration_error": "fcn_captcha.reliability",
    "evaluate_plain": "fcn_captcha.evaluate",
    "export_onnx": "fcn_captcha.onnx_export",
    "fine_tune": "fcn_captcha.steps",
    "fit": "fcn_captcha.fitting",
    "fit_calibrator": "fcn_captcha.confidence",
    "generate_dataset": "fcn_captcha.dataset",
    "get_config": "fcn_captcha.config",
    "ImageError": "fcn_captcha.preprocess",
    "infer_scheme": "fcn_captcha.scheme",
    "load_dataset": "fcn_captcha.dataset",
    "load_folder": "fcn_captcha.dataset",
    "load_model": "fcn_captcha.checkpoint",
    "LookalikeGenerator": "fcn_captcha.lookalike",
    "measure_scope": "fcn_captcha.scope",
    "NonFiniteError": "fcn_captcha.steps",
    "PRESETS": "fcn_captcha.config",
    "Reading": "fcn_captcha.decoder",
    "ReadingTable": "fcn_captcha.decoder",
    "reading_metrics": "fcn_captcha.metrics",
    "real_split": "fcn_captcha.dataset",
    "render_center_maps": "fcn_captcha.targets",
    "save_model": "fcn_captcha.checkpoint",
    "SchemeInfo": "fcn_captcha.scheme",
    "Style": "fcn_captcha.style",
    "to_model_input": "fcn_captcha.preprocess",
    "train": "fcn_captcha.training",
    "weak_centers": "fcn_captcha.weak",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fcn_captcha' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
