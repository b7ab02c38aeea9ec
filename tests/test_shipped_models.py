"""Every model shipped in resources/models/: its file matches the registry's sha256, its spec is
complete, the model card exists, all weights stay under 50 MB, and it reproduces the probabilities
recorded when it was shipped (scripts/ship_model.py) on two bundled sample images to 1e-3."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxrviewer.resources import path as resource

REGISTRY = resource("models", "registry.json")
SHIPPED = json.loads(REGISTRY.read_text())["models"] if REGISTRY.is_file() else {}

pytestmark = pytest.mark.skipif(not SHIPPED, reason="no model is shipped in resources/models/ yet")


def test_the_default_model_is_shipped_and_all_weights_fit_the_budget():
    assert "default" in SHIPPED
    total = sum((REGISTRY.parent / entry["file"]).stat().st_size for entry in SHIPPED.values())
    assert total < 50e6
    assert (REGISTRY.parent / SHIPPED["default"]["file"]).stat().st_size < 20e6  # issue 14: the default under 20 MB


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_shipped_model_reproduces_its_recorded_predictions(name):
    import torch

    from cxrviewer.io import load_image
    from cxrviewer.models import load_model, sha256_of
    from cxrviewer.models.metadata import inputs_of_image
    from cxrviewer.models.registry import installed_models
    from cxrviewer.models.spec import DEFAULT_TARGETS

    entry = SHIPPED[name]
    file = REGISTRY.parent / entry["file"]
    assert sha256_of(file) == entry["sha256"]
    assert installed_models()[name].path.resolve() == file.resolve()
    model, spec = load_model(name)  # checks the sha256 again
    assert spec.name == name and set(DEFAULT_TARGETS) <= set(spec.targets)  # the viewer's eight, maybe more
    assert len(spec.thresholds) == len(spec.targets) and all(0 < t < 1 for t in spec.thresholds)
    assert spec.method and spec.training and spec.metrics
    card = (REGISTRY.parent / f"{name}.md").read_text(encoding="utf-8")
    for section in ("## Reproduce", "## Localization", "## Limits", "bootstrap 95% interval", "operating threshold"):
        assert section in card, f"{name}.md lacks '{section}'"
    assert "cxrviewer-train fit" in card and "not a medical device" in card
    reference = json.loads((REGISTRY.parent / f"{name}.reference.json").read_text())
    assert reference["sha256"] == entry["sha256"] and len(reference["probabilities"]) == 2
    with torch.inference_mode():
        for rel, expected in reference["probabilities"].items():
            image = load_image(resource("samples", *Path(rel).parts))
            x, metadata = spec.preprocess(image), inputs_of_image(spec, image)
            got = torch.sigmoid((model(x) if metadata is None else model(x, metadata)).float())[0].numpy()
            np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)


def test_storage_drift_reports_each_storage_of_the_default(capsys):
    """scripts/storage_drift.py reports a finite largest change for each storage of the default
    (stored in fp32: fp16 rounding moves its probabilities by more than 1e-3), and the coarser int8
    rounding moves them more than fp16 does."""
    import importlib.util
    import re

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("storage_drift", REPO / "scripts" / "storage_drift.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([str(resource("models/default.safetensors"))]) == 0
    rows = dict(re.findall(r"^\s+(\S+)\s+.*change (\S+)", capsys.readouterr().out, re.M))
    assert set(rows) == {"fp16", "int8-channel", "int8-kernel"}
    changes = {name: float(value) for name, value in rows.items()}
    assert all(np.isfinite(v) for v in changes.values()), changes
    assert 0 < changes["fp16"] < changes["int8-channel"]
