"""Heads: the classifier (linear, or SCALP's two-layer MLP), projection heads, KACL's radiomic encoder."""

from __future__ import annotations

from torch import nn


def mlp(dims: list[int], batch_norm: bool = False) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            if batch_norm:
                layers.append(nn.BatchNorm1d(b))
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def classifier_head(feature_dim: int, num_classes: int, kind: str = "linear", hidden: int = 512) -> nn.Module:
    """`linear`, or `mlp`: SCALP's "two-layered fully-connected network with ReLU non-linearity"
    (the paper gives no hidden width; 512 here)."""
    if kind == "linear":
        return nn.Linear(feature_dim, num_classes)
    if kind == "mlp":
        return mlp([feature_dim, hidden, num_classes])
    raise ValueError(f"unknown classifier head '{kind}'")


def projection_head(feature_dim: int, hidden: int = 2048, out: int = 128) -> nn.Sequential:
    """SimCLR's projection head g(·): Linear–ReLU–Linear (SCALP: "defined similarly to [1]")."""
    return mlp([feature_dim, hidden, out])


def radiomic_encoder(n_features: int, hidden: int = 256, out: int = 512) -> nn.Sequential:
    """KACL's radiomic encoder f_r: a three-layer MLP with ReLU (widths not given in the paper;
    the output matches ResNet-18's 512-d representation so the projectors have the same input)."""
    return mlp([n_features, hidden, hidden, out], batch_norm=True)
