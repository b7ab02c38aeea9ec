"""Starting weights for a new model: `imagenet` (from installed packages, never downloaded), `none`
(random initialisation) or a PATH to a torchvision ResNet state dict the user has (loaded with
`weights_only=True`, shapes checked). Returns the provenance string the spec records."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from cxrviewer.errors import CxrError

from cxrviewer.models.efficientnet_lite import VARIANTS

IMAGENET_ARCHITECTURES = tuple(VARIANTS)


def default_init(architecture: str) -> str:
    """`imagenet` wherever installed-package weights exist for the architecture, else `none`."""
    return "imagenet" if architecture in IMAGENET_ARCHITECTURES else "none"


def initialise(model: nn.Module, architecture: str, init: str) -> str:
    """Load starting weights into `model` (a `CXRClassifier`) in place; returns their provenance."""
    if init in ("", "auto"):
        init = default_init(architecture)
    if init == "none":
        return "none"
    if init == "imagenet":
        if architecture not in IMAGENET_ARCHITECTURES:
            raise CxrError(None, f"no installed ImageNet weights for architecture '{architecture}' "
                                 f"(available for {', '.join(IMAGENET_ARCHITECTURES)}; give a state dict file instead)")
        from cxrviewer.models.efficientnet_lite import MissingWeights, load_imagenet

        try:
            return load_imagenet(model.backbone)
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
    trunk.load_state_dict({k: state[k] for k in own}, strict=True)
    return f"file:{path.name}"
