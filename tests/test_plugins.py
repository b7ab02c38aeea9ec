"""Third-party models: an architecture and a ready model file offered through the entry-point
groups `cxrviewer.models` and `cxrviewer.model_files` are found by name, checked by sha256 and
loaded like any registered model; a broken plugin is skipped with a warning."""

from __future__ import annotations

import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest

from cxrviewer.models import registry


@pytest.fixture
def plugin_package(tmp_path, monkeypatch):
    """A package `acme_cxr` that registers an architecture and offers one model file of it."""
    pkg = tmp_path / "acme_cxr"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from pathlib import Path
        import torch.nn as nn

        class Tiny(nn.Module):
            def __init__(self, num_classes, in_channels=1, width=4):
                super().__init__()
                self.backbone = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU())
                self.head = nn.Linear(width, num_classes)
            def forward(self, x):
                return self.head(self.backbone(x).mean(dim=(2, 3)))

        def register(register_architecture):
            register_architecture("acme-tiny", Tiny, doc="a plugin's network",
                                  spec_defaults={"cam_layer": "backbone.0", "input_size": (32, 32)}, replace=True)

        FILES = []  # filled by the test once the file is written

        def model_files():
            return FILES
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    groups = {
        registry.ENTRY_POINT_GROUP: [EntryPoint("acme", "acme_cxr:register", registry.ENTRY_POINT_GROUP)],
        registry.MODEL_FILES_GROUP: [EntryPoint("acme", "acme_cxr:model_files", registry.MODEL_FILES_GROUP),
                                     EntryPoint("broken", "acme_cxr:nothing_here", registry.MODEL_FILES_GROUP)],
    }
    monkeypatch.setattr(registry, "entry_points", lambda group: groups.get(group, []))
    monkeypatch.setattr(registry, "_PLUGINS_LOADED", False)
    yield sys.modules.setdefault("acme_cxr", __import__("acme_cxr"))
    registry.unregister_architecture("acme-tiny")
    sys.modules.pop("acme_cxr", None)


def test_a_plugin_model_is_listed_loaded_and_checked(plugin_package, tmp_path):
    from cxrviewer.analysis import Analyzer
    from cxrviewer.models import create_model, load_model
    from cxrviewer.models.checkpoint import save_model

    with pytest.warns(UserWarning, match="'broken' failed to load"):
        registry.architectures()
        model, spec = create_model("acme-tiny", name="acme-v1")
        path = tmp_path / "acme.safetensors"
        sha = save_model(model, spec, path)
        plugin_package.FILES.append({"name": "acme-v1", "file": str(path), "sha256": sha})
        entry = registry.installed_models()["acme-v1"]
    assert entry.source == "plugin:acme" and entry.sha256 == sha
    with pytest.warns(UserWarning):
        loaded, loaded_spec = load_model("acme-v1")
        analyzer = Analyzer("acme-v1", device="cpu")
    assert loaded_spec.architecture == "acme-tiny" and analyzer.sha256 == sha

    path.write_bytes(path.read_bytes()[:-8] + b"tampered")
    from cxrviewer.errors import CxrError

    with pytest.warns(UserWarning), pytest.raises(CxrError, match="acme.safetensors"):
        load_model("acme-v1")
