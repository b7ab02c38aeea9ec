"""Build models from architecture names or specs; load them from files or registered names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrviewer.errors import MissingFile
from cxrviewer.models.registry import architectures, get_architecture, installed_models
from cxrviewer.models.spec import DEFAULT_TARGETS, ModelSpec


def list_architectures() -> list[str]:
    return sorted(architectures())


def build_model(spec: ModelSpec):
    """A randomly initialised network for a spec (its architecture and options), in eval mode."""
    arch = get_architecture(spec.architecture)
    model = arch.builder(len(spec.targets), **{**arch.defaults, **spec.arch_kwargs,
                                               "in_channels": spec.in_channels})
    if spec.inputs:
        from cxrviewer.models.metadata import vector_size

        if not hasattr(model, "attach_metadata"):
            raise ValueError(f"the {spec.architecture} architecture cannot take metadata inputs")
        model.attach_metadata(vector_size(spec.inputs), len(spec.targets))
    model.eval()
    return model


def create_model(arch: str, targets: list[str] | tuple[str, ...] | None = None, **spec_fields: Any):
    """(model, spec): a new randomly initialised model. `spec_fields` override spec defaults
    (input_size, in_channels, mean, std, arch_kwargs, ...)."""
    architecture = get_architecture(arch)
    fields = {**architecture.spec_defaults, **spec_fields}
    in_channels = int(fields.get("in_channels", 1))
    for key, default in (("mean", 0.5), ("std", 0.25)):  # one value (the architecture's or ours) serves every channel
        value = tuple(fields.get(key, (default,)))
        fields[key] = value * in_channels if len(value) == 1 else value
    fields.setdefault("name", arch)
    fields["arch_kwargs"] = {**architecture.defaults, **fields.get("arch_kwargs", {})}
    if architecture.resolve is not None:
        fields["arch_kwargs"] = architecture.resolve(fields["arch_kwargs"])
    spec = ModelSpec(architecture=arch, targets=tuple(targets or DEFAULT_TARGETS), **fields)
    return build_model(spec), spec


def resolve_model(ref: str | Path = "default") -> tuple[Path, str | None]:
    """(model file, its registered sha256 or None) for a registered name or a file path."""
    registered = installed_models()
    if isinstance(ref, str) and ref in registered:
        entry = registered[ref]
        return entry.path, entry.sha256
    path = Path(ref)
    if path.is_file():
        by_path = {e.path.resolve(): e for e in registered.values()}
        entry = by_path.get(path.resolve())
        return path, (entry.sha256 if entry else None)
    known = ", ".join(sorted(registered)) or "none installed"
    raise MissingFile(path, f"no model file or registered model of that name (registered: {known})")


def load_model(ref: str | Path = "default"):
    """(model in eval mode, spec) from a model file path or a registered name (sha256 checked)."""
    from cxrviewer.models.checkpoint import load_checkpoint

    path, expected = resolve_model(ref)
    return load_checkpoint(path, expected_sha256=expected)
