"""Class activation maps for all classes of a model in one call.

    compute_cams(model, spec, batch, method="gradcam", classes=None, *, progress=None,
                 batch_size=32, amp=False) -> np.ndarray [B, K, h, w] float32
    compute_cams_with_logits(...) -> (cams, logits [B, N] float32)   # probabilities for free
    cams_to_image(cams [B, K, h, w], size=(H, W)) -> np.ndarray [B, K, H, W] float32 in [0, 1]

The maps are raw (ReLU'd, unscaled) at the target layer's resolution (`spec.cam_layer`); K is
`len(classes or spec.targets)`, in that order; classes are target names or output indices.

Gradient methods take one forward pass whose tail (the layers after the CAM layer) runs on K
copies of the feature map, and one backward pass through that tail only (see
`cxrviewer.explain.layer_pass`, which also says what it assumes of the tail). Score-CAM does C
masked forwards per image for all classes together. The model runs in eval mode on the device of
its parameters; flags, hooks and gradients are restored or released afterwards, also on errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from cxrviewer.explain.cam_methods import CamRequest, Progress, get_cam_method
from cxrviewer.explain.layer_pass import cam_mode, model_device


def resolve_classes(spec: Any, classes: Sequence[str | int] | str | int | None) -> list[int]:
    """Output indices for target names and/or indices (None: all targets, in output order)."""
    targets = list(spec.targets)
    if classes is None:
        return list(range(len(targets)))
    if isinstance(classes, (str, int, np.integer)):
        classes = [classes]
    indices = []
    for item in classes:
        if isinstance(item, str):
            if item not in targets:
                raise ValueError(f"unknown class '{item}' (the model's targets: {', '.join(targets)})")
            indices.append(targets.index(item))
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= int(item) < len(targets):
                raise ValueError(f"class index {item} is out of range for {len(targets)} targets")
            indices.append(int(item))
        else:
            raise ValueError(f"a class is a target name or an output index, not {item!r}")
    if not indices:
        raise ValueError("no classes asked for")
    return indices


def _as_batch(batch: Any, device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(batch)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"expected an input batch [B, C, H, W] (or one image [C, H, W]), got shape {tuple(x.shape)}")
    return x.to(device=device, dtype=torch.float32)


def compute_cams_with_logits(model: nn.Module, spec: Any, batch: Any, method: str = "gradcam",
                             classes: Sequence[str | int] | str | int | None = None, *,
                             progress: Progress | None = None, batch_size: int = 32,
                             amp: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`compute_cams` and the model's logits [B, N] for all N outputs, from the same pass."""
    output = _run(model, spec, batch, method, classes, progress, batch_size, amp, want_logits=True)
    if output.logits is None:  # a method that does not forward the whole model
        raise RuntimeError(f"the CAM method '{method}' returned no logits")
    return output.cams.detach().cpu().numpy().astype(np.float32), output.logits.detach().cpu().numpy().astype(np.float32)


def compute_cams(model: nn.Module, spec: Any, batch: Any, method: str = "gradcam",
                 classes: Sequence[str | int] | str | int | None = None, *,
                 progress: Progress | None = None, batch_size: int = 32, amp: bool = False,
                 return_logits: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Maps [B, K, h, w] (float32, CPU) of `method` for `classes` (default: all `spec.targets`).

    `batch`: the preprocessed input [B, C, H, W] (`spec.preprocess(image)` gives [1, C, H, W]).
    `progress(done, total)`: called as work completes (after each masked batch for Score-CAM);
    an exception raised by it cancels the computation and propagates. `batch_size`: masked inputs
    per forward for Score-CAM. `amp`: bf16 autocast on CUDA (ignored on CPU). `return_logits`:
    return (maps, logits [B, N]) as `compute_cams_with_logits` does.
    """
    if return_logits:
        return compute_cams_with_logits(model, spec, batch, method, classes, progress=progress,
                                        batch_size=batch_size, amp=amp)
    output = _run(model, spec, batch, method, classes, progress, batch_size, amp, want_logits=False)
    return output.cams.detach().cpu().numpy().astype(np.float32)


def _run(model, spec, batch, method, classes, progress, batch_size, amp, want_logits):
    cam_method = get_cam_method(method)
    indices = resolve_classes(spec, classes)
    try:
        layer = model.get_submodule(spec.cam_layer)
    except AttributeError as exc:
        raise ValueError(f"the model has no layer '{spec.cam_layer}' (spec.cam_layer)") from exc
    x = _as_batch(batch, model_device(model))
    request = CamRequest(model, spec, layer, x, indices, progress, batch_size, amp, want_logits)
    with cam_mode(model):
        output = cam_method(request)
    to_input_frame = getattr(model, "to_input_frame", None)
    if method != "native" and callable(to_input_frame):
        # Models that warp their input before the CAM layer (CIA-Net's alignment) produce maps in
        # the warped frame; bring them back so boxes land on the input image.
        with torch.no_grad():
            output.cams = to_input_frame(output.cams.to(x.dtype), x)
    return output


def cams_to_image(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Min-max scale every map to [0, 1] (a constant map becomes zeros), then resize it bilinearly
    to `size` = (H, W) with cv2.resize, as pytorch-grad-cam's `scale_cam_image` does (which
    divides by max + 1e-7 instead of max: the same maps up to that epsilon)."""
    cams = np.asarray(cams, dtype=np.float32)
    if cams.ndim != 4:
        raise ValueError(f"expected maps [B, K, h, w], got shape {cams.shape}")
    batch, k, h, w = cams.shape
    height, width = int(size[0]), int(size[1])
    flat = cams.reshape(batch * k, h * w)
    out = np.empty((batch * k, height, width), dtype=np.float32)
    for i, row in enumerate(flat):  # one map a call: bit-identical to scale_cam_image's resize
        lo, span = row.min(), row.max() - row.min()
        scaled = (row - lo) / span if span > 0 else np.zeros_like(row)
        out[i] = cv2.resize(scaled.reshape(h, w), (width, height), interpolation=cv2.INTER_LINEAR)
    return out.reshape(batch, k, height, width)
