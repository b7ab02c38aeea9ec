"""Registries: architectures by name (built-ins + the `cxrviewer.models` entry-point group) and
installed model files by name, each recorded with its sha256.

Installed models live in JSON registries: the shipped one (`resources/models/registry.json`) and
the user's (`$CXRVIEWER_DATA_DIR` or `~/.local/share/cxrviewer`, `models/registry.json`), where
`cxrviewer-train export --install` writes. The user's entries win on a name clash.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

ENTRY_POINT_GROUP = "cxrviewer.models"
MODEL_FILES_GROUP = "cxrviewer.model_files"  # plugins' ready model files (see docs/plugins.md)


@dataclass(frozen=True)
class Architecture:
    name: str
    builder: Callable[..., Any]  # builder(num_classes, **arch_kwargs) -> nn.Module returning logits
    doc: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    spec_defaults: dict[str, Any] = field(default_factory=dict)  # e.g. cam_layer, input_size
    # Fixes options that depend on the installation (e.g. the radiomic feature count) into the
    # spec when a model is created, so a saved file never depends on them again.
    resolve: Callable[[dict[str, Any]], dict[str, Any]] | None = None


_ARCHITECTURES: dict[str, Architecture] = {}
_PLUGINS_LOADED = False


def register_architecture(name: str, builder: Callable[..., Any], *, doc: str = "",
                          defaults: dict[str, Any] | None = None, spec_defaults: dict[str, Any] | None = None,
                          resolve: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                          replace: bool = False) -> None:
    """Add an architecture; third-party packages call this from their entry point."""
    if name in _ARCHITECTURES and not replace:
        raise ValueError(f"an architecture named '{name}' is already registered")
    _ARCHITECTURES[name] = Architecture(name, builder, doc, dict(defaults or {}), dict(spec_defaults or {}),
                                        resolve)


def unregister_architecture(name: str) -> None:
    """Remove an architecture (tests and plugins that register temporary ones)."""
    _ARCHITECTURES.pop(name, None)


def _load_builtins_and_plugins() -> None:
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    import cxrviewer.models.architectures  # noqa: F401 - registers the built-ins
    import cxrviewer.models.cianet  # noqa: F401

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            hook = ep.load()
            if callable(hook):
                hook(register_architecture)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the app
            import warnings

            warnings.warn(f"cxrviewer: the model plugin '{ep.name}' failed to load ({exc})", stacklevel=2)


def architectures() -> dict[str, Architecture]:
    _load_builtins_and_plugins()
    return dict(_ARCHITECTURES)


def get_architecture(name: str) -> Architecture:
    archs = architectures()
    if name not in archs:
        raise KeyError(f"unknown architecture '{name}' (known: {', '.join(sorted(archs))})")
    return archs[name]


# --- installed model files -------------------------------------------------------------------

@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    sha256: str
    source: str  # "shipped" or "user"


def user_data_dir() -> Path:
    return Path(os.environ.get("CXRVIEWER_DATA_DIR", Path.home() / ".local" / "share" / "cxrviewer"))


def shipped_registry_path() -> Path:
    from cxrviewer.resources import path

    return path("models", "registry.json")


def user_registry_path() -> Path:
    return user_data_dir() / "models" / "registry.json"


def _read_registry(path: Path, source: str) -> dict[str, ModelEntry]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    entries = {}
    for name, item in (data.get("models", {}) if isinstance(data, dict) else {}).items():
        try:
            file = Path(item["file"])
            entries[name] = ModelEntry(name, file if file.is_absolute() else path.parent / file,
                                       str(item["sha256"]).lower(), source)
        except (KeyError, TypeError):
            continue
    return entries


def plugin_models() -> dict[str, ModelEntry]:
    """Model files that installed packages offer through the `cxrviewer.model_files` entry-point group.

    Each entry point names a callable (or a list) giving items `{"name", "file", "sha256"}`; the
    sha256 is checked when the model loads, like any registered model. A broken plugin is skipped
    with a warning.
    """
    found: dict[str, ModelEntry] = {}
    for ep in entry_points(group=MODEL_FILES_GROUP):
        try:
            provided = ep.load()
            items = provided() if callable(provided) else provided
            for item in items:
                found[str(item["name"])] = ModelEntry(str(item["name"]), Path(item["file"]),
                                                      str(item["sha256"]).lower(), f"plugin:{ep.name}")
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the app
            import warnings

            warnings.warn(f"cxrviewer: the model-file plugin '{ep.name}' failed to load ({exc})", stacklevel=2)
    return found


def installed_models() -> dict[str, ModelEntry]:
    """Every model that can be chosen by name: shipped, then plugins', then the user's (later ones win)."""
    return {**_read_registry(shipped_registry_path(), "shipped"), **plugin_models(),
            **_read_registry(user_registry_path(), "user")}


def install_model(name: str, file: str | Path, sha256: str, registry: Path | None = None) -> ModelEntry:
    """Record a model file under `name` in the user's registry (or the given one)."""
    registry = registry or user_registry_path()
    registry.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"models": {}}
    if registry.is_file():
        try:
            data = json.loads(registry.read_text())
        except ValueError:
            pass
    data.setdefault("models", {})[name] = {"file": str(Path(file).resolve()), "sha256": sha256}
    tmp = registry.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(registry)
    return ModelEntry(name, Path(file).resolve(), sha256, "user")
