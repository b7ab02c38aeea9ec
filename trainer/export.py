"""`cxrviewer-train export RUN`: a run's best (or last) model as a standalone model file, optionally
installed into the viewer's model registry under a name.

The model file carries its spec (architecture, targets, input contract, calibrated thresholds,
method, training data and validation metrics); `--half` stores it in fp16 (half the size; the
weights are cast back to the architecture's dtype on load). Installing records the file's sha256
in the user registry, so a file changed afterwards is refused by the viewer.
"""

from __future__ import annotations

import re
from pathlib import Path

from cxrviewer.models.checkpoint import load_checkpoint, save_model
from cxrviewer.models.registry import install_model, user_data_dir
from cxrviewer.trainer.train_state import BadRun


def run_model_file(run: str | Path, which: str = "best") -> Path:
    run = Path(run)
    if run.is_file():
        return run
    path = run / f"{which}.safetensors"
    if not run.is_dir():
        raise BadRun(run, "the run folder does not exist")
    if not path.is_file():
        raise BadRun(path, f"the run has no {which} model yet (train at least one epoch or until --max-steps)")
    return path


def export_run(run: str | Path, out: str | Path | None = None, *, which: str = "best", half: bool = False,
               install: bool = False, name: str | None = None) -> tuple[Path, str, str | None]:
    """(model file written, its sha256, the registry name if installed)."""
    source = run_model_file(run, which)
    model, spec = load_checkpoint(source)
    registry_name = None
    if install:
        registry_name = name or _safe_name(spec.name or Path(run).name)
        spec.name = registry_name
    if out is None:
        folder = user_data_dir() / "models" if install else Path(run)
        out = folder / f"{registry_name or _safe_name(spec.name or 'model')}.safetensors"
    out = Path(out)
    if out.resolve() == source.resolve():
        raise BadRun(out, "the export would overwrite the run's own model file; choose another output path")
    sha = save_model(model, spec, out, half=half)
    if install:
        install_model(registry_name, out, sha)
    return out, sha, registry_name


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"

