"""Model files: safetensors weights with the spec as JSON in the header metadata.

Loading never executes code (safetensors holds tensors only). A file named in a registry must
match the sha256 recorded there, else it is refused.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cxrviewer.errors import CxrError, MissingFile
from cxrviewer.models.spec import ModelSpec, SpecError

SPEC_KEY = "cxrviewer_spec"


class BadModel(CxrError):
    """A model file that cannot be used: not safetensors, tampered, spec malformed, weights mismatched."""


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(model, spec: ModelSpec, path: str | Path, *, half: bool = False) -> str:
    """Write weights + spec; returns the file's sha256. `half` stores floating tensors as fp16."""
    import torch
    from safetensors.torch import save_file

    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        if half and tensor.is_floating_point():
            tensor = tensor.to(torch.float16)
        state[key] = tensor
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={SPEC_KEY: spec.to_json()})
    tmp.replace(path)
    return sha256_of(path)


def read_spec(path: str | Path) -> ModelSpec:
    """The spec of a model file, without loading its weights."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MissingFile(path, "the model file does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own types on garbage
        raise BadModel(path, f"this is not a readable model file ({exc})") from exc
    if SPEC_KEY not in metadata:
        raise BadModel(path, "the model file carries no cxrviewer spec")
    try:
        return ModelSpec.from_json(metadata[SPEC_KEY])
    except SpecError as exc:
        raise BadModel(path, str(exc)) from exc


def load_checkpoint(path: str | Path, expected_sha256: str | None = None):
    """(model in eval mode, spec) from a file; refuses a sha256 mismatch or weights that do not fit."""
    from safetensors.torch import load_file

    from cxrviewer.models.factory import build_model

    path = Path(path)
    if expected_sha256 is not None:
        if not path.is_file():
            raise MissingFile(path, "the model file does not exist")
        actual = sha256_of(path)
        if actual != expected_sha256.lower():
            raise BadModel(path, f"the model file's sha256 {actual[:12]}… does not match its registry entry "
                                 f"{expected_sha256[:12]}… (modified or corrupt)")
    spec = read_spec(path)
    try:
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise BadModel(path, f"the weights cannot be read ({exc})") from exc
    try:
        model = build_model(spec)
    except (KeyError, ValueError, TypeError) as exc:
        raise BadModel(path, f"the spec's architecture cannot be built ({exc})") from exc
    reference = model.state_dict()
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    if missing or unexpected:
        raise BadModel(path, f"the weights do not fit the architecture '{spec.architecture}' "
                             f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    for key, tensor in state.items():
        if tensor.shape != reference[key].shape:
            raise BadModel(path, f"the tensor {key} has shape {tuple(tensor.shape)}, the architecture needs "
                                 f"{tuple(reference[key].shape)}")
        if tensor.is_floating_point():
            state[key] = tensor.to(reference[key].dtype)
    model.load_state_dict(state)
    model.eval()
    return model, spec
