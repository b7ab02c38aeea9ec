"""One forward pass that yields the target layer's activations and, for every requested class at
once, the gradient of that class's logit with respect to them.

How (exact, and cheap):

- a forward hook on the target layer detaches its output A [B, C, h, w], repeats it K times along
  the batch (``A.repeat_interleave(K, 0)``: row ``b*K + j`` is image b for class j) as a leaf
  tensor that requires grad, and hands a copy of it to the rest of the network;
- every parameter has ``requires_grad=False`` for the duration (flags restored afterwards), so
  no autograd graph is recorded before the hook: the trunk runs once, like inference;
- the tail (everything after the layer: pooling and head) runs on B*K rows and gives logits
  [B*K, N]; the diagonal per image, ``logits.view(B, K, N)[b, j, classes[j]]``, summed, gives
  d logit_k / dA for all k in one ``torch.autograd.grad`` call.

This needs the tail to treat samples independently (no batch statistics, no cross-sample
attention): true in eval mode for every built-in model (eval-mode BatchNorm is per-sample). The
pass checks that the tail returned B*K rows and refuses otherwise.

Everything it changes (hooks, requires_grad flags, train/eval flags) is put back in `finally`
blocks, also when the model or a progress callback raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn


class CamLayerError(RuntimeError):
    """The target layer or the layers after it do not allow the one-pass computation."""


@dataclass
class LayerPass:
    logits: torch.Tensor  # [B, N] (all of the model's outputs, once per image)
    activations: torch.Tensor  # [B, C, h, w] float32
    grads: torch.Tensor | None  # [B, K, C, h, w] float32: d logit_{classes[k]} / dA, or None


def model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def autocast_context(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when asked; the CPU path is always plain fp32."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def cam_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter requiring grad inside; every module's training flag and every
    parameter's requires_grad flag restored on exit (individually, so mixed states survive)."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def forward_hook(layer: nn.Module, hook) -> Iterator[None]:
    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def run_layer_pass(model: nn.Module, layer: nn.Module, x: torch.Tensor, classes: Sequence[int], *,
                   gradients: bool, amp: bool = False) -> LayerPass:
    """Forward `x` [B, ...] once; activations of `layer`, logits, and (if `gradients`) the
    gradients for all `classes` at once. Call inside `cam_mode(model)`."""
    batch, k = x.shape[0], len(classes)
    state: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, inputs: object, output: object) -> torch.Tensor | None:
        if "activations" in state:
            raise CamLayerError("the CAM layer ran more than once in one forward pass")
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            raise CamLayerError("the CAM layer must return one tensor [B, C, h, w], "
                                f"not {type(output).__name__}{tuple(getattr(output, 'shape', ()))}")
        activations = output.detach()
        state["activations"] = activations
        if not gradients:
            return None
        repeated = activations.repeat_interleave(k, 0).requires_grad_(True)
        state["repeated"] = repeated
        # A non-leaf copy goes on, so an in-place op in the tail (ReLU(inplace=True)) stays legal.
        return repeated.clone()

    device = model_device(model)
    with forward_hook(layer, hook), autocast_context(device, amp):
        if not gradients:
            with torch.no_grad():
                logits = model(x)
            if "activations" not in state:
                raise CamLayerError("the CAM layer did not run in the forward pass")
            return LayerPass(logits.detach().float(), state["activations"].float(), None)
        with torch.inference_mode(False), torch.enable_grad():  # also when called under no_grad/inference_mode
            logits = model(x)
            if "repeated" not in state:
                raise CamLayerError("the CAM layer did not run in the forward pass")
            if logits.ndim != 2 or logits.shape[0] != batch * k:
                raise CamLayerError(
                    f"the layers after the CAM layer returned {tuple(logits.shape)} for {batch}x{k} repeated "
                    "feature maps: they must treat samples independently (a per-sample tail in eval mode)")
            per_image = logits.view(batch, k, logits.shape[1])
            index = torch.as_tensor(list(classes), device=logits.device).view(1, k, 1).expand(batch, k, 1)
            chosen = per_image.gather(2, index).squeeze(2)  # [B, K]: class classes[j] on copy j
            (grads,) = torch.autograd.grad(chosen.sum(), state["repeated"])
    activations = state["activations"].float()
    grads = grads.float().view(batch, k, *activations.shape[1:])
    return LayerPass(per_image[:, 0, :].detach().float(), activations, grads)
