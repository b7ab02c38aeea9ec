"""CAMs for all classes in one pass (`cxrviewer.explain`), against pytorch-grad-cam (a test-only
dependency) and against a naive per-class full-backward computation, for every registered
architecture; plus the hygiene rules: hooks released, flags restored, no memory growth.

Score-CAM costs C masked forwards per image (512 for ResNet-18, 2048 for 50-layer models) and
pytorch-grad-cam repeats them per class, so its comparison runs by default on the 512-channel
architectures at 64 px with one pytorch-grad-cam class; CXRVIEWER_SLOW_CAM_TESTS=1 runs it on every
architecture (minutes on a 2-core CPU).
"""

from __future__ import annotations

import gc
import os
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from cxrviewer.explain import CAM_METHODS, cams_to_image, compute_cams, register_cam_method
from cxrviewer.explain.cam_methods import GradCAM, get_cam_method
from cxrviewer.explain.layer_pass import CamLayerError
from cxrviewer.models import create_model, list_architectures

ARCHS = list_architectures()
GRADIENT_METHODS = ["gradcam", "gradcam++"]
SIZE = 128  # input px: a 4x4 map at a stride-32 layer (CIA-Net: its 16x16 grid)
SCORE_SIZE = 64
TARGETS_4 = ("Atelectasis", "Effusion", "Mass", "Pneumothorax")
SLOW = os.environ.get("CXRVIEWER_SLOW_CAM_TESTS") == "1"
_MODELS: dict[tuple[str, int, int], tuple[nn.Module, object]] = {}


def smooth_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Structured inputs (a coarse random field, upsampled, plus a little noise): random-init
    networks give less degenerate maps on them than on white noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 1, 8, 8, generator=g)
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return fine + 0.1 * torch.randn(n, 1, size, size, generator=g)


def calibrate_batch_norm(model: nn.Module, size: int) -> None:
    """Perturb the random init into something less degenerate: BatchNorm running statistics from
    a few train-mode forwards on structured inputs (cumulative averages), then eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for seed in (11, 12):
            model(smooth_images(4, size, seed))
    model.eval()
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def prepared(arch: str, size: int = SIZE, n_targets: int = 8):
    """A seeded random-init model with calibrated BatchNorm statistics (cached per session)."""
    key = (arch, size, n_targets)
    if key not in _MODELS:
        torch.manual_seed(0)
        targets = None if n_targets == 8 else TARGETS_4[:n_targets]
        model, spec = create_model(arch, targets=targets, input_size=(size, size))
        calibrate_batch_norm(model, size)
        _MODELS[key] = (model, spec)
    return _MODELS[key]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / np.sqrt((a @ a) * (b @ b)))


def compare_with_grad_cam(ours: np.ndarray, reference: list[np.ndarray]) -> tuple[int, int]:
    """Pearson r >= 0.999 for every map that is not constant in both; (compared, skipped)."""
    compared = skipped = 0
    for k, ref in enumerate(reference):
        mine = ours[k]
        flat_mine, flat_ref = np.ptp(mine) < 1e-6, np.ptp(ref) < 1e-6
        if flat_mine and flat_ref:
            skipped += 1
            continue
        assert not (flat_mine or flat_ref), f"class {k}: one map is constant, the other is not"
        r = pearson(mine, ref)
        assert r >= 0.999, f"class {k}: Pearson r = {r:.6f}"
        compared += 1
    return compared, skipped


def no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               for m in model.modules())


# --- equality with pytorch-grad-cam --------------------------------------------------------

@pytest.mark.parametrize("method", GRADIENT_METHODS)
@pytest.mark.parametrize("arch", ARCHS)
def test_gradient_methods_match_pytorch_grad_cam(arch, method):
    from pytorch_grad_cam import GradCAM as PgcGradCAM
    from pytorch_grad_cam import GradCAMPlusPlus as PgcGradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, spec = prepared(arch, SIZE, n_targets=4)
    x = smooth_images(1, SIZE)
    ours = cams_to_image(compute_cams(model, spec, x, method), (SIZE, SIZE))[0]
    cls = {"gradcam": PgcGradCAM, "gradcam++": PgcGradCAMPlusPlus}[method]
    with cls(model=model, target_layers=[model.get_submodule(spec.cam_layer)]) as cam:
        reference = [cam(input_tensor=x, targets=[ClassifierOutputTarget(k)])[0] for k in range(len(spec.targets))]
    compared, skipped = compare_with_grad_cam(ours, reference)
    print(f"{arch} {method}: {compared} maps compared, {skipped} all-zero in both skipped")
    assert compared >= len(reference) // 2
    assert no_hooks_left(model)


SCORE_ARCHS = ARCHS if SLOW else [a for a in ("resnet18", "resnet18-ta", "kacl") if a in ARCHS]


@pytest.mark.parametrize("arch", SCORE_ARCHS)
def test_score_cam_matches_pytorch_grad_cam(arch):
    from pytorch_grad_cam import ScoreCAM as PgcScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, spec = prepared(arch, SCORE_SIZE, n_targets=2)
    x = smooth_images(1, SCORE_SIZE, seed=3)
    calls = []
    raw = compute_cams(model, spec, x, "scorecam", batch_size=128, progress=lambda d, t: calls.append((d, t)))
    ours = cams_to_image(raw, (SCORE_SIZE, SCORE_SIZE))[0]
    layer = model.get_submodule(spec.cam_layer)
    with torch.no_grad():
        channels = model.backbone(x).shape[1] if spec.cam_layer == "backbone.layer4" else None
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == calls[-1][1] and channels in (None, done[-1])
    classes = range(len(spec.targets)) if SLOW else range(1)  # ours does all; the reference one by one
    cam = PgcScoreCAM(model=model, target_layers=[layer])
    cam.batch_size = 128
    try:
        reference = [cam(input_tensor=x, targets=[ClassifierOutputTarget(k)])[0] for k in classes]
    finally:
        cam.activations_and_grads.release()
    compared, skipped = compare_with_grad_cam(ours[: len(reference)], reference)
    print(f"{arch} scorecam: {compared} maps compared, {skipped} skipped")
    assert compared >= 1 or skipped == len(reference)
    assert raw.shape[1] == len(spec.targets) and np.isfinite(raw).all() and (raw >= 0).all()


# --- an independent reference: one full backward per class -------------------------------

def naive_cams(model: nn.Module, layer: nn.Module, x: torch.Tensor, method: str) -> np.ndarray:
    """Per class: a full forward and backward through the whole network (all parameters with
    gradients), the activations' gradient from a tensor hook, weights in numpy."""
    store: dict[str, torch.Tensor] = {}

    def keep(module, inputs, output):
        output.retain_grad()
        store["a"] = output

    handle = layer.register_forward_hook(keep)
    maps = []
    try:
        for k in range(len(TARGETS_4)):
            model.zero_grad(set_to_none=True)
            logits = model(x)
            logits[:, k].sum().backward()
            a = store["a"].detach().numpy().astype(np.float64)[0]
            g = store["a"].grad.numpy().astype(np.float64)[0]
            if method == "gradcam":
                w = g.mean(axis=(1, 2))
            else:
                s = a.sum(axis=(1, 2))[:, None, None]
                alpha = g ** 2 / (2 * g ** 2 + s * g ** 3 + 1e-6)
                alpha[g == 0] = 0
                w = (np.maximum(g, 0) * alpha).sum(axis=(1, 2))
            maps.append(np.maximum((w[:, None, None] * a).sum(axis=0), 0))
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    return np.stack(maps)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
@pytest.mark.parametrize("arch", ARCHS)
def test_all_classes_at_once_equals_per_class_backward(arch, method):
    model, spec = prepared(arch, SIZE, n_targets=4)
    x = smooth_images(1, SIZE, seed=5)
    ours = compute_cams(model, spec, x, method)[0]
    reference = naive_cams(model, model.get_submodule(spec.cam_layer), x, method)
    assert ours.shape == reference.shape and ours.dtype == np.float32
    scale = max(float(np.abs(reference).max()), 1e-12)
    np.testing.assert_allclose(ours, reference, rtol=1e-3, atol=1e-4 * scale)


def test_batch_of_images_and_class_selection():
    model, spec = prepared("resnet18", SIZE)
    x = smooth_images(3, SIZE, seed=7)
    full, logits = compute_cams(model, spec, x, "gradcam", return_logits=True)
    assert full.shape == (3, 8, 4, 4) and logits.shape == (3, 8)
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(x).numpy(), rtol=1e-4, atol=1e-5)
    for b in range(3):  # images in a batch do not influence each other
        np.testing.assert_allclose(compute_cams(model, spec, x[b:b + 1], "gradcam")[0], full[b], rtol=1e-4, atol=1e-6)
    with torch.inference_mode():  # callers inside no_grad / inference_mode get the same maps
        np.testing.assert_allclose(compute_cams(model, spec, x, "gradcam"), full, rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        np.testing.assert_allclose(compute_cams(model, spec, x, "gradcam"), full, rtol=1e-5, atol=1e-7)
    picked = compute_cams(model, spec, x, "gradcam", classes=["Mass", 0, "Pneumothorax"])
    np.testing.assert_allclose(picked, full[:, [4, 0, 7]], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="unknown class"):
        compute_cams(model, spec, x, "gradcam", classes=["Fracture"])
    with pytest.raises(ValueError, match="out of range"):
        compute_cams(model, spec, x, "gradcam", classes=[8])
    with pytest.raises(ValueError, match="unknown CAM method"):
        compute_cams(model, spec, x, "nonsense")


# --- cams_to_image ---------------------------------------------------------------------------

def test_cams_to_image_matches_scale_cam_image():
    from pytorch_grad_cam.utils.image import scale_cam_image

    rng = np.random.default_rng(0)
    cams = np.maximum(rng.normal(size=(2, 40, 5, 7)), 0).astype(np.float32) * 3
    cams[0, 3] = 0.0
    cams[1, 5] = 2.5  # constant -> zeros
    ours = cams_to_image(cams, (40, 56))
    assert ours.shape == (2, 40, 40, 56) and ours.dtype == np.float32
    reference = scale_cam_image(cams.reshape(-1, 5, 7), (56, 40)).reshape(2, 40, 40, 56)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert not ours[0, 3].any() and not ours[1, 5].any()
    assert ours.min() >= 0.0 and ours.max() <= 1.0 + 1e-6


# --- methods registry, native maps, device ------------------------------------------------

class ToyNative(nn.Module):
    """A tiny model with its own localisation maps (like CIA-Net's `native_cams`)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(1, 6, 3, stride=4, padding=1)
        self.head = nn.Conv2d(6, 3, 1)

    def native_cams(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.features(x))).amax(dim=(2, 3))


def toy_spec(cam_layer: str = "features"):
    from cxrviewer.models import ModelSpec

    return ModelSpec(architecture="toy", targets=("a", "b", "c"), input_size=(32, 32), cam_layer=cam_layer)


def test_registry_and_native_method():
    assert {"gradcam", "gradcam++", "scorecam", "native"} <= set(CAM_METHODS)
    model, spec = ToyNative().eval(), toy_spec()
    x = torch.rand(2, 1, 32, 32)
    native = compute_cams(model, spec, x, "native", classes=["c", "a"])
    np.testing.assert_allclose(native, model.native_cams(x).detach().numpy()[:, [2, 0]], rtol=1e-6)
    for method in ("gradcam", "gradcam++", "scorecam"):  # generic: any model with a spec works
        assert compute_cams(model, spec, x, method).shape == (2, 3, 8, 8)
    resnet, resnet_spec = prepared("resnet18", SIZE)
    with pytest.raises(ValueError, match="no native"):
        compute_cams(resnet, resnet_spec, smooth_images(1, SIZE), "native")
    for arch in ARCHS:  # the registered models with native maps (CIA-Net)
        native_model, native_spec = prepared(arch, SIZE, n_targets=4)
        if callable(getattr(native_model, "native_cams", None)):
            maps = compute_cams(native_model, native_spec, smooth_images(1, SIZE), "native")
            assert maps.shape[:2] == (1, 4) and np.isfinite(maps).all()

    class Doubled(GradCAM):
        name = "test-doubled-gradcam"

        def get_cam_weights(self, request, passed):
            return 2 * super().get_cam_weights(request, passed)

    register_cam_method(Doubled)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_cam_method(Doubled)
        np.testing.assert_allclose(compute_cams(model, spec, x, Doubled.name),
                                   2 * compute_cams(model, spec, x, "gradcam"), rtol=1e-5, atol=1e-7)
    finally:
        CAM_METHODS.pop(Doubled.name)
    assert get_cam_method("gradcam").name == "gradcam"


def test_a_tail_that_mixes_samples_is_refused():
    class Mixer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Conv2d(1, 4, 3, padding=1)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            return self.head(self.features(x).mean(dim=(0, 2, 3)))[None]  # [1, 3] whatever B is

    model = Mixer().eval()
    with pytest.raises(CamLayerError, match="independently"):
        compute_cams(model, toy_spec(), torch.rand(1, 1, 32, 32), "gradcam")
    assert no_hooks_left(model) and all(p.requires_grad for p in model.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_amp_runs():
    import copy

    model, spec = prepared("resnet18", SIZE)
    gpu = copy.deepcopy(model).cuda()
    x = smooth_images(2, SIZE)
    cpu_maps = compute_cams(model, spec, x, "gradcam++")
    gpu_maps = compute_cams(gpu, spec, x, "gradcam++")
    assert gpu_maps.dtype == np.float32
    for a, b in zip(cams_to_image(cpu_maps, (SIZE, SIZE)).reshape(-1, SIZE * SIZE),
                    cams_to_image(gpu_maps, (SIZE, SIZE)).reshape(-1, SIZE * SIZE)):
        if np.ptp(a) > 0:
            assert pearson(a, b) > 0.999
    amp_maps = compute_cams(gpu, spec, x, "gradcam", amp=True)
    assert amp_maps.shape == cpu_maps.shape and np.isfinite(amp_maps).all()
    assert compute_cams(gpu, spec, x, "scorecam", amp=True, batch_size=256).shape == cpu_maps.shape


# --- hygiene: hooks, flags, memory ---------------------------------------------------------

class Cancelled(Exception):
    pass


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam"])
def test_hooks_released_and_flags_restored(method):
    torch.manual_seed(1)
    model, spec = create_model("resnet18", input_size=(64, 64))
    model.train()
    model.backbone.layer1.eval()  # a mixed state must survive, not become all-train
    model.backbone.conv1.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    x = smooth_images(1, 64)

    def check():
        assert no_hooks_left(model)
        assert [p.requires_grad for p in model.parameters()] == flags
        assert [m.training for m in model.modules()] == modes
        assert all(p.grad is None for p in model.parameters())

    compute_cams(model, spec, x, method, classes=[0, 1], batch_size=256)
    check()

    def cancel(done, total):
        raise Cancelled

    with pytest.raises(Cancelled):
        compute_cams(model, spec, x, method, progress=cancel, batch_size=64)
    check()
    with pytest.raises(RuntimeError):  # the model itself fails mid-pass
        compute_cams(model, spec, torch.zeros(1, 3, 64, 64), method)
    check()


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance() touches deprecated torch aliases
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def test_no_memory_growth_over_100_calls():
    model, spec = prepared("resnet18", 64)
    x = smooth_images(1, 64)
    layer = model.get_submodule(spec.cam_layer)
    for _ in range(5):  # warm-up: lazy initialisation, caches
        compute_cams(model, spec, x, "gradcam++")
    tensors = _live_tensors()
    resident = _resident_bytes()
    tracemalloc.start()
    try:
        compute_cams(model, spec, x, "gradcam")
        gc.collect()
        start, _ = tracemalloc.get_traced_memory()
        for i in range(100):
            compute_cams(model, spec, x, GRADIENT_METHODS[i % 2], return_logits=bool(i % 3))
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(layer._forward_hooks) == 0 and no_hooks_left(model)
    assert _live_tensors() <= tensors
    # measured: ~12 KB (tracemalloc's own bookkeeping), resident growth ~0 MB, same tensor count
    assert end - start < 64 * 1024, f"Python heap grew by {end - start} bytes over 100 calls"
    if resident is not None:
        grown = _resident_bytes() - resident
        assert grown < 32 * 2**20, f"resident memory grew by {grown / 2**20:.1f} MiB over 100 calls"


def test_maps_of_a_warping_model_are_returned_in_the_input_frame():
    """CIA-Net warps its input before the CAM layer; compute_cams maps the result back through the
    model's `to_input_frame` (here a toy warp: a horizontal flip)."""
    from cxrviewer.explain import compute_cams
    from cxrviewer.models import create_model

    model, spec = create_model("resnet18", input_size=(64, 64))
    x = torch.randn(1, 1, 64, 64)
    plain = compute_cams(model, spec, x, method="gradcam")
    model.to_input_frame = lambda maps, inputs: torch.flip(maps, dims=[-1])
    flipped = compute_cams(model, spec, x, method="gradcam")
    np.testing.assert_allclose(flipped, plain[..., ::-1], atol=1e-6)
