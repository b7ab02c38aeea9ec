"""Explanations: CAM methods (all classes in one pass) and box generation.

    compute_cams(model, spec, batch, method="gradcam", classes=None) -> [B, K, h, w]
    compute_cams_with_logits(...) -> (cams, logits)
    cams_to_image(cams, (H, W)) -> [B, K, H, W] in [0, 1]
    CAM_METHODS, register_cam_method
    boxes_from_heatmap(heatmap, method="scalp"|"talasila"|"threshold", **params) -> [Box]

Names load lazily: importing this package does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "compute_cams": "cxrviewer.explain.cams",
    "compute_cams_with_logits": "cxrviewer.explain.cams",
    "cams_to_image": "cxrviewer.explain.cams",
    "resolve_classes": "cxrviewer.explain.cams",
    "CAM_METHODS": "cxrviewer.explain.cam_methods",
    "CamMethod": "cxrviewer.explain.cam_methods",
    "register_cam_method": "cxrviewer.explain.cam_methods",
    "get_cam_method": "cxrviewer.explain.cam_methods",
    "available_methods": "cxrviewer.explain.cam_methods",
    "CamLayerError": "cxrviewer.explain.layer_pass",
    "Box": "cxrviewer.explain.boxes",
    "BOX_METHODS": "cxrviewer.explain.boxes",
    "register_box_method": "cxrviewer.explain.boxes",
    "boxes_from_heatmap": "cxrviewer.explain.boxes",
    "map_box": "cxrviewer.explain.boxes",
    "scale_box": "cxrviewer.explain.boxes",
    "resize_transform": "cxrviewer.explain.boxes",
    "compose_transforms": "cxrviewer.explain.boxes",
    "largest_rectangles": "cxrviewer.explain.rectangles",
    "expand_rectangles": "cxrviewer.explain.rectangles",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cxrviewer.explain' has no attribute '{name}'")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
