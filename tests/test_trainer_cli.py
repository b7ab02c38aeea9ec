"""`cxrviewer-train fit` then `evaluate` then `export --install`, end to end on the real NIH sample,
and `fit --folds K` cross-validation."""

from __future__ import annotations

import json

import pytest

from cxrviewer.models import load_model
from cxrviewer.models.registry import installed_models
from cxrviewer.trainer.cli import main
from tests.conftest import NIH_SAMPLE, REPO

needs_sample = pytest.mark.skipif(not NIH_SAMPLE.is_dir(), reason="../shared/data/nih-sample is not present")

TINY = ["--architecture", "resnet18", "--input-size", "64", "--batch-size", "8", "--workers", "0", "--device", "cpu",
        "--progress", "none", "--epochs", "1"]


@needs_sample
def test_fit_evaluate_export_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CXRVIEWER_DATA_DIR", str(tmp_path / "data"))
    runs = tmp_path / "runs"
    assert main(["fit", "--data", f"nih:{NIH_SAMPLE}", "--method", "baseline", *TINY, "--output", str(runs),
                 "--name", "e2e", "--max-train-images", "48", "--max-val-images", "40"]) == 0
    run = runs / "e2e"
    # evaluate the run folder on its own data and test split, with a report
    assert main(["evaluate", "--model", str(run), "--json", str(tmp_path / "eval.json"),
                 "--report", str(tmp_path / "report"), "--device", "cpu"]) == 0
    doc = json.loads((tmp_path / "eval.json").read_text())
    assert doc["n_images"] == 94  # the seeded 20% test split of the 474-image sample
    assert set(doc["auc"]) == set(load_model(run / "best.safetensors")[1].targets)
    assert set(doc["localization"]) == {"0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"}
    assert (tmp_path / "report" / "results.md").is_file() and (tmp_path / "report" / "roc.png").stat().st_size > 0
    # export and install: the viewer's registry lists it, load_model finds it by name
    assert main(["export", str(run), "--install", "--name", "site-baseline"]) == 0
    assert "installed as 'site-baseline'" in capsys.readouterr().out
    entry = installed_models()["site-baseline"]
    model, spec = load_model("site-baseline")
    assert spec.name == "site-baseline" and spec.method == "baseline" and entry.path.is_file()
    # a changed file is refused by its registry hash
    entry.path.write_bytes(entry.path.read_bytes()[:-1] + b"\0")
    from cxrviewer.models.checkpoint import BadModel

    with pytest.raises(BadModel, match="sha256"):
        load_model("site-baseline")


@needs_sample
def test_cross_validation_writes_per_fold_runs_and_a_summary(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["fit", "--data", f"nih:{NIH_SAMPLE}", "--method", "baseline", *TINY, "--output", str(runs),
                 "--name", "cv", "--folds", "2", "--max-train-images", "24", "--max-val-images", "16",
                 "--max-steps", "2", "--select", "last", "--lesions", "6"]) == 0
    summary = json.loads((runs / "cv" / "folds.json").read_text())
    assert summary["n_folds"] == 2 and sum(summary["n_images"]) == 474  # every image tested exactly once
    # each fold was also scored on 6 synthetic lesions in its held-out normal films
    assert [sum(f["n_lesions"].values()) for f in summary["folds"]] == [6, 6]
    assert set(summary["lesion_localization"]) == {"0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"}
    assert "synthetic lesions" in (runs / "cv" / "folds.md").read_text()
    assert "mean" in summary["mean_auc"] and (runs / "cv" / "fold1" / "report" / "results.md").is_file()
    # the fold is part of the run's configuration, so the fold's run is resumable on its own split
    import yaml

    saved = yaml.safe_load((runs / "cv" / "fold1" / "config.yaml").read_text())
    assert (saved["folds"], saved["fold"], saved["select"]) == (2, 1, "last")
    # --select last: the fold was scored with its last model
    from cxrviewer.models import load_model
    from cxrviewer.trainer.config import TrainConfig
    from cxrviewer.trainer.evaluation import evaluate
    from cxrviewer.trainer.loop import open_training_source

    model, spec = load_model(runs / "cv" / "fold1" / "last.safetensors")
    source = open_training_source(TrainConfig(**saved))
    again = evaluate(model, spec, source, split="test", device="cpu")
    reported = json.loads((runs / "cv" / "fold1" / "report" / "results.json").read_text())
    assert reported["mean_auc"] == pytest.approx(again.mean_auc, abs=1e-6)
    # the finished fold runs reopen for a model card: every image held out once; pooled AUC over all
    import numpy as np

    from cxrviewer.errors import CxrError
    from cxrviewer.trainer.crossval import fold_models, pooled_auc
    from cxrviewer.trainer.evaluation import predict

    folds = list(fold_models([runs / "cv" / "fold0", runs / "cv" / "fold1"], "last"))
    assert sum(len(f.test) for f in folds) == 474 and folds[1].config["fold"] == 1
    y = np.concatenate([np.stack([r.labels for r in f.test]) for f in folds])
    p = np.concatenate([predict(f.model, f.spec, f.source, f.test) for f in folds])
    pooled = pooled_auc(y, p, list(folds[0].spec.targets))
    assert pooled["n_images"] == 474 and 0 <= pooled["mean_auc"] <= 1 and len(pooled["mean_auc_ci"]) == 2
    with pytest.raises(CxrError, match="another run's test split"):
        list(fold_models([runs / "cv" / "fold1", runs / "cv" / "fold1"]))
    # scripts/pooled_cv.py: the same pooled figures; a recipe compared with itself differs by exactly 0
    import importlib.util

    spec_ = importlib.util.spec_from_file_location("pooled_cv", REPO / "scripts" / "pooled_cv.py")
    pooled_cv = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(pooled_cv)
    fold_runs = [str(runs / "cv" / "fold0"), str(runs / "cv" / "fold1")]
    assert pooled_cv.main([*fold_runs, "--against", *fold_runs[::-1], "--json", str(tmp_path / "cv.json")]) == 0
    doc = json.loads((tmp_path / "cv.json").read_text())
    assert doc["mean_auc"] == pytest.approx(pooled["mean_auc"]) and doc["against"]["mean_auc"] == doc["mean_auc"]
    assert doc["difference"]["difference"] == 0 and doc["difference"]["ci"] == [0, 0]
    assert pooled_cv.main([*fold_runs, "--findings", "Effusion,Cardiomegaly", "--json", str(tmp_path / "two.json")]) == 0
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["classes"] == ["Effusion", "Cardiomegaly"] and two["auc"]["Effusion"] == doc["auc"]["Effusion"]
    with pytest.raises(SystemExit, match="do not score Hernia"):
        pooled_cv.main([*fold_runs, "--findings", "Hernia"])
    # scripts/reference_baselines.py --fuse: the runs' held-out folds are this split's; fused with the metadata
    spec_ = importlib.util.spec_from_file_location("reference_baselines", REPO / "scripts" / "reference_baselines.py")
    references = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(references)
    assert references.main(["--data", f"nih:{NIH_SAMPLE}", "--folds", "2", "--fuse", *fold_runs]) == 0
    out = capsys.readouterr().out
    assert "network + metadata (rank average): mean AUC per fold" in out and "fused minus network" in out
    with pytest.raises(SystemExit, match="fold1: its held-out images are not one fold of this split"):
        references.main(["--data", f"nih:{NIH_SAMPLE}", "--folds", "3", "--fuse", fold_runs[1]])


def test_methods_lists_every_method_with_defaults(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "baseline" in out and "defaults:" in out


def test_pooled_cv_refuses_to_compare_recipes_scored_on_different_images():
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("pooled_cv", REPO / "scripts" / "pooled_cv.py")
    pooled_cv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pooled_cv)
    y = np.array([[1.0], [0.0], [1.0], [0.0]])
    first = (["Mass"], y, np.array([[0.9], [0.1], [0.6], [0.4]]), ["a", "b", "c", "d"])
    shuffled = (["Mass"], y[[2, 3, 0, 1]], np.array([[0.7], [0.2], [0.8], [0.3]]), ["c", "d", "a", "b"])
    assert pooled_cv.compare(first, shuffled)["difference"] == 0  # aligned by image id: both rank perfectly
    other = (["Mass"], y, first[2], ["a", "b", "c", "e"])
    with pytest.raises(SystemExit, match=r"^runs/b: these runs did not score the same images"):
        pooled_cv.compare(first, other, where="runs/b")
    relabelled = (["Mass"], 1 - y, first[2], first[3])
    with pytest.raises(SystemExit, match="labels of the same images differ"):
        pooled_cv.compare(first, relabelled, where="runs/b")
