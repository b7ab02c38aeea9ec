"""How far lower-precision weight storage moves a model's probabilities (the check behind fp16).

    python scripts/storage_drift.py MODEL_FILE_OR_RUN [--which last]

Rounds the model's floating tensors as each storage would (fp16; int8 with one scale per output
channel; int8 with one scale per 3x3 kernel, the finest grouping a ResNet allows) and reports the
largest change of any probability on the bundled sample studies, with the size the weights would
take. A model card may quote a storage only where this stays within 1e-3 (issue 6). Nothing is
written: cxrviewer's model files store fp32 or fp16 only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _int8(tensor, group: int | None):
    """Symmetric int8 rounding with one fp16 scale per output channel (or per `group` weights)."""
    import torch

    flat = tensor.reshape(tensor.shape[0], -1)
    if group and flat.shape[1] % group == 0:
        flat = flat.reshape(-1, group)
    scale = (flat.abs().amax(1) / 127).half().float()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero (or fp16-underflowing) row stays zero
    return (torch.round(flat / scale[:, None]).clamp(-127, 127) * scale[:, None]).reshape(tensor.shape), scale.numel()


def _rounded(state: dict, storage: str) -> tuple[dict, int]:
    """(state as the storage would give it back, bytes the weights would take)."""
    out, size = {}, 0
    for key, tensor in state.items():
        if not tensor.is_floating_point():
            out[key], size = tensor, size + tensor.numel() * tensor.element_size()
        elif storage != "fp16" and tensor.dim() >= 2 and tensor.numel() >= 4096:
            out[key], scales = _int8(tensor, 9 if storage == "int8-kernel" else None)
            size += tensor.numel() + 2 * scales
        else:
            out[key], size = tensor.half().float(), size + 2 * tensor.numel()
    return out, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a .safetensors model file or a run folder")
    parser.add_argument("--which", default="last", choices=("best", "last"))
    args = parser.parse_args(argv)

    import torch

    from cxrviewer.io import load_image
    from cxrviewer.models.checkpoint import load_checkpoint

    path = args.model / f"{args.which}.safetensors" if args.model.is_dir() else args.model
    model, spec = load_checkpoint(path)
    images = [spec.preprocess(load_image(p)) for p in sorted((REPO / "resources" / "samples").rglob("*.dcm"))]

    def probabilities():
        with torch.inference_mode():
            return torch.cat([torch.sigmoid(model(x).float()) for x in images])

    full_state = {k: v.detach().clone().float() if v.is_floating_point() else v.clone()
                  for k, v in model.state_dict().items()}
    model.load_state_dict(full_state)
    reference = probabilities()
    print(f"{path}: {len(images)} bundled sample images x {reference.shape[1]} findings")
    for storage in ("fp16", "int8-channel", "int8-kernel"):
        state, size = _rounded(full_state, storage)
        model.load_state_dict(state)
        drift = float((probabilities() - reference).abs().max())
        print(f"  {storage:13s} {size / 2**20:6.1f} MiB   largest probability change {drift:.2e}"
              f"   {'within' if drift <= 1e-3 else 'over'} 1e-3")
    return 0


if __name__ == "__main__":
    sys.exit(main())
