"""Starting weights for a new model: `imagenet` (from installed packages, never downloaded), `none`
(random initialisation) or a PATH to a torchvision ResNet state dict the user has (loaded with
`weights_only=True`, shapes checked). Returns the provenance string the spec records."""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from cxrviewer.errors import CxrError

from cxrviewer.models.efficientnet_lite import VARIANTS, EfficientNetLite

def _lite_trunk(model: nn.Module):
    """The model's EfficientNet-Lite trunk (its `backbone`), or None: installed ImageNet weights
    exist for exactly these trunks (whatever the architecture around them: baseline, SCALP, KACL,
    CIA-Net with depth efficientnet-lite0, ...)."""
    trunk = getattr(model, "backbone", None)
    return trunk if isinstance(trunk, EfficientNetLite) else None


def default_init(model: nn.Module) -> str:
    """`imagenet` wherever installed-package weights exist for the model's trunk, else `none`."""
    return "imagenet" if _lite_trunk(model) is not None else "none"


def initialise(model: nn.Module, architecture: str, init: str) -> str:
    """Load starting weights into `model` (a `CXRClassifier`) in place; returns their provenance."""
    if init in ("", "auto"):
        init = default_init(model)
    if init == "none":
        return "none"
    if init == "imagenet":
        trunk = _lite_trunk(model)
        if trunk is None:
            raise CxrError(None, f"no installed ImageNet weights for architecture '{architecture}' "
                                 f"(they exist for EfficientNet-Lite trunks: {', '.join(VARIANTS)}; "
                                 "give a state dict file instead)")
        from cxrviewer.models.efficientnet_lite import MissingWeights, load_imagenet
        try:
            return load_imagenet(trunk)
        except MissingWeights as exc:
            raise CxrError(None, str(exc)) from exc
    return _load_resnet_state_dict(model, Path(init))


def _load_resnet_state_dict(model: nn.Module, path: Path) -> str:
    """A torchvision ResNet state dict into the model's ResNet trunk; the ImageNet `fc` is dropped and
    a 3-channel `conv1` is folded (summed) onto a 1-channel stem."""
    import torch

    if not path.is_file():
        raise CxrError(path, "no such weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling or format failure is the file's problem
        raise CxrError(path, f"is not a weights-only PyTorch state dict ({type(exc).__name__})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CxrError(path, "does not hold a state dict")
    trunk = model.backbone
    own = trunk.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    # Triplet-attention ResNets (SCALP) wrap each block's last batch norm as Sequential(bn, attention):
    # the torchvision weights go to `bnN.0`, and the attention (`bnN.1`) stays random.
    added = set()
    for key in own:
        wrapped = re.fullmatch(r"(.*\.bn\d)\.([01])\.(.*)", key)
        if wrapped and wrapped[2] == "1":
            added.add(key)
        elif wrapped and f"{wrapped[1]}.{wrapped[3]}" in state:
            state[key] = state.pop(f"{wrapped[1]}.{wrapped[3]}")
    own = {k: v for k, v in own.items() if k not in added}
    stem = state.get("conv1.weight")
    if stem is not None and own.get("conv1.weight") is not None and own["conv1.weight"].shape[1] == 1 \
            and stem.ndim == 4 and stem.shape[1] == 3:
        state["conv1.weight"] = stem.sum(dim=1, keepdim=True)
    missing = sorted(set(own) - set(state))
    wrong = sorted(k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape))
    unexpected = sorted(set(state) - set(own))
    if missing or wrong or unexpected:
        detail = (f"{len(missing)} weight(s) missing, e.g. {missing[0]}" if missing
                  else f"{len(wrong)} weight(s) of the wrong shape, e.g. {wrong[0]}" if wrong
                  else f"{len(unexpected)} weight(s) it does not have, e.g. {unexpected[0]}")
        raise CxrError(path, f"does not fit this network's trunk: {detail}")
    trunk.load_state_dict({k: state[k] for k in own}, strict=not added)
    return f"file:{path.name}" + (" (attention random)" if added else "")
