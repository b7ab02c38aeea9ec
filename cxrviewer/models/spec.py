"""The model spec: everything needed to rebuild and use a model from its file alone.

Carried as JSON in every checkpoint (like timm's `PretrainedCfg` and torchxrayvision's
`targets`/`op_threshs`), validated on load so a malformed spec is refused with a clear error.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from cxrviewer.models.metadata import METADATA_INPUTS, BadInputs, check_inputs, encode
from cxrviewer.models.preprocess import Geometry, preprocess_image

DEFAULT_TARGETS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
)
SPEC_VERSION = 1


class SpecError(ValueError):
    """A spec that cannot describe a usable model (missing or ill-typed fields)."""


@dataclass
class ModelSpec:
    """What a checkpoint is: architecture, outputs, input contract, CAM layer, thresholds, provenance.

    - `targets`: finding names in output order; the forward pass returns logits [B, len(targets)].
    - `input_size` (height, width), `in_channels` 1 or 3, `mean`/`std` per channel applied after
      the intensity step maps the image to [0, 1] (see `cxrviewer.models.preprocess`).
    - `cam_layer`: dotted name such that `model.get_submodule(cam_layer)` is the CAM target layer.
    - `thresholds`: per-class operating points on the probability (sigmoid of the logit).
    - `inputs`: the metadata the model takes beside the image (a subset of
      `cxrviewer.models.metadata.METADATA_INPUTS`: age, sex, view); () for an image-only model.
    """

    architecture: str
    targets: tuple[str, ...] = DEFAULT_TARGETS
    input_size: tuple[int, int] = (512, 512)
    in_channels: int = 1
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    cam_layer: str = "backbone.layer4"
    thresholds: tuple[float, ...] = ()
    intensity: str = "display"  # "display": the file's default VOI (+ MONOCHROME1 inversion) -> 8 bit / 255
    resize: str = "stretch"  # "stretch" (NIH's square resize) or "letterbox" (keep aspect, pad)
    inputs: tuple[str, ...] = ()
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    method: str = "random-init"
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    spec_version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        self.targets = tuple(str(t) for t in self.targets)
        self.input_size = tuple(int(v) for v in self.input_size)  # type: ignore[assignment]
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if not self.thresholds:
            self.thresholds = tuple(0.5 for _ in self.targets)
        self.thresholds = tuple(float(v) for v in self.thresholds)
        self.inputs = tuple(str(v) for v in self.inputs)
        self.validate()

    def validate(self) -> None:
        problems = []
        if not self.architecture:
            problems.append("no architecture")
        if not self.targets or len(set(self.targets)) != len(self.targets):
            problems.append("targets must be non-empty and distinct")
        if len(self.input_size) != 2 or min(self.input_size) < 16:
            problems.append(f"input_size {self.input_size} is not (height, width) of at least 16 pixels")
        if self.in_channels not in (1, 3):
            problems.append(f"in_channels must be 1 or 3, not {self.in_channels}")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels or min(self.std) <= 0:
            problems.append("mean/std need one value per input channel and std > 0")
        if len(self.thresholds) != len(self.targets) or not all(0.0 <= t <= 1.0 for t in self.thresholds):
            problems.append("thresholds need one probability in [0, 1] per target")
        if not self.cam_layer:
            problems.append("no cam_layer")
        if self.intensity not in ("display", "minmax"):
            problems.append(f"unknown intensity step '{self.intensity}'")
        if self.resize not in ("stretch", "letterbox"):
            problems.append(f"unknown resize mode '{self.resize}'")
        try:
            if check_inputs(self.inputs) != self.inputs:
                problems.append(f"inputs must be listed in the order {', '.join(METADATA_INPUTS)}")
        except BadInputs as exc:
            problems.append(str(exc))
        if problems:
            raise SpecError("malformed model spec: " + "; ".join(problems))

    def metadata_vector(self, values: dict[str, Any]) -> np.ndarray:
        """The encoded metadata input of this model ([0] for an image-only model)."""
        return encode(values, self.inputs)

    # --- the one preprocessing path --------------------------------------------------------
    def preprocess(self, image: Any) -> "torch.Tensor":  # noqa: F821
        """`load_image`'s ImageData (or a 2-D array of modality values) -> tensor [1, C, H, W]."""
        return self.preprocess_with_geometry(image)[0]

    def preprocess_with_geometry(self, image: Any) -> tuple["torch.Tensor", Geometry]:  # noqa: F821
        """Also returns the map from model-input pixel edges to original-image pixel edges."""
        return preprocess_image(image, self)

    # --- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = list(self.targets)
        data["input_size"] = list(self.input_size)
        data["inputs"] = list(self.inputs)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=_json_default)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        if not isinstance(data, dict):
            raise SpecError("malformed model spec: not a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"malformed model spec: unknown field(s) {', '.join(unknown)}")
        if int(data.get("spec_version", SPEC_VERSION)) > SPEC_VERSION:
            raise SpecError(f"model spec version {data['spec_version']} is newer than this cxrviewer reads")
        try:
            return cls(**data)
        except SpecError:
            raise
        except (TypeError, ValueError) as exc:
            raise SpecError(f"malformed model spec: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"malformed model spec: not JSON ({exc})") from exc
        return cls.from_dict(data)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
