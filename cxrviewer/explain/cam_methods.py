"""CAM methods by name: a small class per method over a shared base (pytorch-grad-cam's `BaseCAM`
with `get_cam_weights`), each producing the maps of all requested classes in one call.

    CAM_METHODS: dict[str, CamMethod]          # "gradcam", "gradcam++", "scorecam", "native"
    register_cam_method(method, replace=False) # add one (an instance or a no-argument class)

A weighted method returns weights [B, K, C] for the target layer's channels; the base forms
cam = ReLU(sum_c w_kc A_c) for every image and class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cxrviewer.explain.layer_pass import LayerPass, autocast_context, run_layer_pass

Progress = Callable[[int, int], Any]


@dataclass
class CamRequest:
    model: nn.Module
    spec: Any  # ModelSpec
    layer: nn.Module
    x: torch.Tensor  # [B, C_in, H, W] on the model's device
    classes: list[int]  # output indices, K of them
    progress: Progress | None = None
    batch_size: int = 32
    amp: bool = False
    want_logits: bool = False


@dataclass
class CamOutput:
    cams: torch.Tensor  # [B, K, h, w] float32
    logits: torch.Tensor | None  # [B, N] float32 or None


class CamMethod:
    """Base: one layer pass (with gradients when `uses_gradients`), weights, weighted sum, ReLU."""

    name: str = ""
    uses_gradients: bool = True

    def __call__(self, request: CamRequest) -> CamOutput:
        passed = run_layer_pass(request.model, request.layer, request.x, request.classes,
                                gradients=self.uses_gradients, amp=request.amp)
        weights = self.get_cam_weights(request, passed)  # [B, K, C]
        cams = torch.relu(torch.einsum("bkc,bchw->bkhw", weights.float(), passed.activations))
        if request.progress is not None and self.uses_gradients:
            request.progress(1, 1)
        return CamOutput(cams, passed.logits)

    def get_cam_weights(self, request: CamRequest, passed: LayerPass) -> torch.Tensor:
        raise NotImplementedError


class GradCAM(CamMethod):
    """Selvaraju et al.: channel weight = spatial mean of d logit / dA."""

    name = "gradcam"

    def get_cam_weights(self, request: CamRequest, passed: LayerPass) -> torch.Tensor:
        return passed.grads.mean(dim=(-2, -1))


class GradCAMPlusPlus(CamMethod):
    """Chattopadhay et al. (eq. 19, exponential-output closed form), as pytorch-grad-cam computes it:

        alpha = g^2 / (2 g^2 + (sum_ij A) g^3 + 1e-6),  alpha = 0 where g == 0,
        w = sum_ij ReLU(g) * alpha.
    """

    name = "gradcam++"
    eps = 1e-6

    def get_cam_weights(self, request: CamRequest, passed: LayerPass) -> torch.Tensor:
        g = passed.grads  # [B, K, C, h, w]
        g2 = g * g
        g3 = g2 * g
        total = passed.activations.sum(dim=(-2, -1), keepdim=True).unsqueeze(1)  # [B, 1, C, 1, 1]
        alpha = g2 / (2 * g2 + total * g3 + self.eps)
        alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
        return (torch.relu(g) * alpha).sum(dim=(-2, -1))


class ScoreCAM(CamMethod):
    """Wang et al., as pytorch-grad-cam computes it: every channel, upsampled to the input size
    (bilinear, align_corners=True), min-max normalised, masks the input; channel weight = softmax
    over channels of the masked input's target logit. One masked forward gives the logits of all
    K classes, so an image costs C forwards (in batches of `batch_size`), not K*C; the masks are
    built batch by batch, never all C at once. `progress(done, total)` after each batch counts
    masked inputs; an exception from it stops the work and propagates.

    On the CPU a batch also holds at most `cpu_pixels_per_forward` input pixels (one 512x512
    image): big batches of big images are memory-bound there (ResNet-18 at 512 px, 2 cores:
    0.25 s per masked input in batches of 32, 0.16 s one at a time)."""

    name = "scorecam"
    uses_gradients = False
    eps = 1e-8
    cpu_pixels_per_forward = 512 * 512

    def get_cam_weights(self, request: CamRequest, passed: LayerPass) -> torch.Tensor:
        acts, x = passed.activations, request.x
        batch, channels = acts.shape[:2]
        size = x.shape[-2:]
        index = torch.as_tensor(request.classes, device=x.device)
        step = max(1, int(request.batch_size))
        if x.device.type == "cpu":
            step = min(step, max(1, self.cpu_pixels_per_forward // (size[0] * size[1])))
        scores = torch.empty(batch, channels, len(request.classes), device=x.device)
        done, total = 0, batch * channels
        with torch.no_grad(), autocast_context(x.device, request.amp):
            for b in range(batch):
                for start in range(0, channels, step):
                    chunk = acts[b, start:start + step, None]  # [n, 1, h, w]
                    masks = F.interpolate(chunk, size=size, mode="bilinear", align_corners=True)
                    flat = masks.flatten(1)
                    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
                    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
                    masks = (masks - lo) / (hi - lo + self.eps)
                    logits = request.model(x[b:b + 1] * masks)  # [n, N]
                    scores[b, start:start + chunk.shape[0]] = logits.float().index_select(1, index)
                    done += chunk.shape[0]
                    if request.progress is not None:
                        request.progress(done, total)
        return torch.softmax(scores, dim=1).transpose(1, 2)  # [B, K, C]


class NativeCAM(CamMethod):
    """The model's own localisation maps, for models that define `native_cams(batch)` ->
    [B, N, h, w] (all outputs; CIA-Net's attention maps). Returned as the model gives them."""

    name = "native"
    uses_gradients = False

    def __call__(self, request: CamRequest) -> CamOutput:
        native = getattr(request.model, "native_cams", None)
        if not callable(native):
            raise ValueError(f"the model '{getattr(request.spec, 'architecture', '?')}' has no native "
                             "localisation maps (no native_cams method); use one of "
                             + ", ".join(n for n in CAM_METHODS if n != self.name))
        with torch.no_grad(), autocast_context(request.x.device, request.amp):
            maps = native(request.x)
            logits = request.model(request.x).float() if request.want_logits else None
        cams = maps.float()[:, request.classes]
        if request.progress is not None:
            request.progress(1, 1)
        return CamOutput(cams, logits)


CAM_METHODS: dict[str, CamMethod] = {}


def register_cam_method(method: CamMethod | type[CamMethod], *, replace: bool = False) -> CamMethod:
    """Register a method under its `name` (an instance, or a class built with no arguments)."""
    instance = method() if isinstance(method, type) else method
    if not instance.name:
        raise ValueError("a CAM method needs a name")
    if instance.name in CAM_METHODS and not replace:
        raise ValueError(f"a CAM method named '{instance.name}' is already registered")
    CAM_METHODS[instance.name] = instance
    return instance


def get_cam_method(name: str) -> CamMethod:
    if name not in CAM_METHODS:
        raise ValueError(f"unknown CAM method '{name}' (known: {', '.join(CAM_METHODS)})")
    return CAM_METHODS[name]


def available_methods(model: nn.Module) -> Sequence[str]:
    """The registered methods usable with this model ("native" only where it has native maps)."""
    return [n for n in CAM_METHODS if n != NativeCAM.name or callable(getattr(model, "native_cams", None))]


for _method in (GradCAM, GradCAMPlusPlus, ScoreCAM, NativeCAM):
    register_cam_method(_method)
