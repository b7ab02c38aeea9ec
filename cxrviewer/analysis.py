"""Image -> probabilities, CAMs, boxes, radiomics: the one pipeline the viewer, `cxrviewer analyze`
and the trainer's evaluation share, so a box drawn in the viewer and a box scored in an evaluation
table come from the same code.

    analyzer = Analyzer("default", device="auto", cam="gradcam")
    result = analyzer.analyze(load_image(path), radiomics=False)

Boxes are in original-image pixel-edge coordinates (half-open: x0 <= x < x1), mapped back through
whatever the preprocessing did (`cxrviewer.models.preprocess.Geometry`).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cxrviewer.io.image import ImageData


@dataclass
class BoxResult:
    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    radiomics: dict[str, float | None] | None = None

    def as_tuple(self) -> tuple[float, float, float, float]:
        return self.x0, self.y0, self.x1, self.y1


@dataclass
class FindingResult:
    name: str
    probability: float
    threshold: float
    boxes: list[BoxResult] = field(default_factory=list)

    @property
    def positive(self) -> bool:
        return self.probability >= self.threshold


@dataclass
class AnalysisResult:
    file: str
    width: int
    height: int
    findings: list[FindingResult]
    cams: np.ndarray | None = None  # [K, h, w] raw maps at the CAM layer's resolution
    geometry: Any = None  # cxrviewer.models.preprocess.Geometry
    cam_method: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # the metadata the model was given ("missing" where absent)

    def finding(self, name: str) -> FindingResult:
        return next(f for f in self.findings if f.name == name)

    def heatmap(self, name: str) -> np.ndarray:
        """The finding's CAM scaled to [0, 1] at original-image size (for overlays)."""
        from cxrviewer.explain import cams_to_image

        k = [f.name for f in self.findings].index(name)
        return heatmap_to_image(cams_to_image(self.cams[None, k:k + 1], self.geometry.input_shape)[0, 0],
                                self.geometry)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "width": self.width,
            "height": self.height,
            **({"inputs": dict(self.inputs)} if self.inputs else {}),
            "findings": [
                {"name": f.name, "probability": round(f.probability, 6), "threshold": f.threshold,
                 "positive": f.positive,
                 "boxes": [{"x0": round(b.x0, 2), "y0": round(b.y0, 2), "x1": round(b.x1, 2), "y1": round(b.y1, 2),
                            "score": round(b.score, 4), **({"radiomics": b.radiomics} if b.radiomics is not None else {})}
                           for b in f.boxes]}
                for f in self.findings
            ],
        }


def heatmap_to_image(heat_input: np.ndarray, geometry: Any) -> np.ndarray:
    """A map in model-input pixels -> original-image pixels through the inverse of the geometry."""
    import cv2

    rows, cols = geometry.image_shape
    # Inverse affine: input u = (x - tx) / sx. Sample at pixel centres.
    m = np.array([[1.0 / geometry.sx, 0.0, (-geometry.tx) / geometry.sx + 0.5 / geometry.sx - 0.5],
                  [0.0, 1.0 / geometry.sy, (-geometry.ty) / geometry.sy + 0.5 / geometry.sy - 0.5]])
    return cv2.warpAffine(heat_input.astype(np.float32), m, (cols, rows),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but no CUDA device is available")
    return device


class Analyzer:
    """A loaded model plus the analysis settings; reuse one across images."""

    def __init__(self, model: Any = "default", spec: Any = None, *, device: str = "auto", cam: str = "gradcam",
                 box_method: str | None = None, box_params: dict[str, Any] | None = None, amp: bool = True) -> None:
        from cxrviewer.models.checkpoint import load_checkpoint, sha256_of
        from cxrviewer.models.factory import resolve_model

        self.model_ref = model
        self.sha256 = ""
        if spec is None:
            path, expected = resolve_model(model)
            model, spec = load_checkpoint(path, expected_sha256=expected)  # verifies `expected`
            self.sha256 = expected or sha256_of(path)
        self.model, self.spec = model, spec
        self.device = resolve_device(device)
        self.model.to(self.device).eval()
        self.cam = cam
        # None: the box algorithm the model file names (chosen for its CAM resolution), else SCALP's
        self.box_method = box_method or spec.extra.get("box_method", "scalp")
        self.box_params = dict(box_params if box_params is not None else spec.extra.get("box_params", {}))
        self.amp = amp and self.device.startswith("cuda")
        self.name = spec.name or spec.architecture

    def analyze(self, image: ImageData, *, radiomics: bool = False, classes: list[str] | None = None,
                progress: Any = None) -> AnalysisResult:
        return analyze_image(self, image, radiomics=radiomics, classes=classes, progress=progress)


def analyze_image(analyzer: Analyzer, image: ImageData, *, radiomics: bool = False,
                  classes: list[str] | None = None, progress: Any = None) -> AnalysisResult:
    import torch

    from cxrviewer.explain import boxes_from_heatmap, cams_to_image, compute_cams

    spec = analyzer.spec
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    x, geometry = spec.preprocess_with_geometry(image)
    x = x.to(analyzer.device)
    timings["preprocess_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    names = list(classes or spec.targets)
    indices = [spec.targets.index(n) for n in names]
    inputs: dict[str, str] = {}
    context = contextlib.nullcontext()
    if spec.inputs:  # age, sex, view from the file's tags (DICOM PatientAge/PatientSex/ViewPosition); missing: masked
        from cxrviewer.models.metadata import describe, inputs_of_image, values_of_image

        inputs = describe(values_of_image(image), spec.inputs)
        context = analyzer.model.metadata_context(inputs_of_image(spec, image))
    with context:
        cams, logits = compute_cams(analyzer.model, spec, x, method=analyzer.cam, classes=indices,
                                    progress=progress, amp=analyzer.amp, return_logits=True)
    probabilities = torch.sigmoid(torch.as_tensor(logits, dtype=torch.float32))[0].numpy()
    timings["model_and_cams_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    heat = cams_to_image(cams, spec.input_size)[0]  # [K, H, W] in [0, 1], model-input pixels
    findings = []
    for j, (name, k) in enumerate(zip(names, indices)):
        boxes = []
        for box in boxes_from_heatmap(heat[j], method=analyzer.box_method, **analyzer.box_params):
            x0, y0, x1, y1 = geometry.box_to_image((box.x0, box.y0, box.x1, box.y1))
            if x1 > x0 and y1 > y0:
                boxes.append(BoxResult(x0, y0, x1, y1, float(box.score)))
        findings.append(FindingResult(name, float(probabilities[k]), float(spec.thresholds[k]), boxes))
    timings["boxes_s"] = time.perf_counter() - t0

    if radiomics:
        t0 = time.perf_counter()
        add_radiomics(image, findings)
        timings["radiomics_s"] = time.perf_counter() - t0
    return AnalysisResult(file=str(image.path), width=image.shape[1], height=image.shape[0], findings=findings,
                          cams=cams[0], geometry=geometry, cam_method=analyzer.cam, timings=timings, inputs=inputs)


def add_radiomics(image: ImageData, findings: list[FindingResult]) -> None:
    """Radiomic features for every box, on the image in modality units."""
    from cxrviewer.radiomics import compute_radiomics

    for finding in findings:
        for box in finding.boxes:
            box.radiomics = compute_radiomics(image, box=box.as_tuple()).as_dict()
