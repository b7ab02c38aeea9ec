"""Models: architectures by name, the spec every checkpoint carries, safe model files.

    list_architectures() -> list[str]
    create_model(arch, targets=None, **spec_fields) -> (torch.nn.Module, ModelSpec)
    load_model(ref) -> (torch.nn.Module, ModelSpec)      # ref: file path or registered name
    spec.preprocess(image) -> torch.Tensor [1, C, H, W]  # the one preprocessing path

torch is imported when a model is built, not when this package is imported.
"""

from cxrviewer.models.checkpoint import BadModel, read_spec, save_model, sha256_of
from cxrviewer.models.factory import build_model, create_model, list_architectures, load_model
from cxrviewer.models.preprocess import Geometry
from cxrviewer.models.registry import install_model, installed_models, register_architecture
from cxrviewer.models.spec import DEFAULT_TARGETS, ModelSpec, SpecError

__all__ = ["BadModel", "DEFAULT_TARGETS", "Geometry", "ModelSpec", "SpecError", "build_model", "create_model",
           "install_model", "installed_models", "list_architectures", "load_model", "read_spec",
           "register_architecture", "save_model", "sha256_of"]
