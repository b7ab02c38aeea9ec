"""The training loop: a baseline run end to end, configuration precedence, kill-and-resume, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cxrviewer.models import load_model
from cxrviewer.trainer.config import BadConfig, resolve_config
from cxrviewer.trainer.loop import fit
from tests.conftest import NIH_SAMPLE, REPO
from tests.trainer_support import repeated_batch_losses, tiny_config

needs_sample = pytest.mark.skipif(not NIH_SAMPLE.is_dir(), reason="../shared/data/nih-sample is not present")
PYTHON = sys.executable


def events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]


def test_config_precedence(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": "nih:/x", "batch_size": 4, "lr": 0.5, "method_args": {"lam": 0.3}}))
    config = resolve_config(cfg, {"batch_size": 8, "lr": None}, ["lam=0.7", "seed=3", "method_args.tau=0.1"])
    assert config.batch_size == 8  # flag beats YAML
    assert config.lr == 0.5  # an unset flag leaves YAML alone
    assert config.seed == 3 and config.method_args == {"lam": 0.7, "tau": 0.1}


def test_config_errors_are_one_sentence(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: nih:/x\nbatchsize: 4\n")
    with pytest.raises(BadConfig, match="unknown configuration field.*batchsize"):
        resolve_config(bad)
    with pytest.raises(BadConfig, match="amp must be one of"):
        resolve_config(None, {"data": "nih:/x", "amp": "fp8"})
    with pytest.raises(BadConfig, match="does not exist"):
        resolve_config(tmp_path / "missing.yaml")


def test_cli_reports_bad_input_in_one_line(tmp_path):
    out = subprocess.run([PYTHON, "-m", "cxrviewer.trainer.cli", "fit", "--data", f"nih:{tmp_path / 'nope'}"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "does not exist" in out.stderr and "Traceback" not in out.stderr


@needs_sample
def test_baseline_loss_goes_down_on_real_images(tmp_path):
    config = tiny_config(f"nih:{NIH_SAMPLE}", "baseline", tmp_path, architecture="resnet18")
    losses = repeated_batch_losses(config, 8, lr=1e-3)
    assert np.mean(losses[-3:]) < losses[0]


@needs_sample
def test_fit_writes_a_loadable_model_with_calibrated_thresholds(tmp_path):
    config = tiny_config(f"nih:{NIH_SAMPLE}", "baseline", tmp_path, architecture="resnet18", epochs=1,
                         max_train_images=36, max_val_images=40)
    run = fit(config)
    assert (run / "config.yaml").is_file() and yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 1
    model, spec = load_model(run / "best.safetensors")
    assert spec.method == "baseline" and spec.training["train_images"] <= 36
    assert "val_auc" in spec.metrics and spec.metrics["epoch"] == 0
    assert len(spec.thresholds) == len(spec.targets)
    kinds = [e["event"] for e in events(run)]
    assert kinds[0] == "start" and "epoch" in kinds and kinds[-1] == "end"


def _cli_fit(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-m", "cxrviewer.trainer.cli", "fit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)


@needs_sample
def test_resume_after_a_kill_reproduces_the_next_step(tmp_path):
    common = ["--data", f"nih:{NIH_SAMPLE}", "--architecture", "resnet18", "--input-size", "64", "--batch-size", "6",
              "--workers", "0", "--cache", "none", "--device", "cpu", "--output", str(tmp_path),
              "--max-steps", "4", "--log-every", "1", "--progress", "jsonl", "--checkpoint-every", "2",
              "--set", "lr=0.001"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = _cli_fit([*common, "--name", "whole"], env)
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    reference = {e["global_step"]: e["loss"] for e in events(tmp_path / "whole") if e["event"] == "step"}

    killed = _cli_fit([*common, "--name", "killed"], env)
    for line in killed.stdout:
        event = json.loads(line)
        if event["event"] == "step" and event["global_step"] == 3:
            killed.send_signal(signal.SIGKILL)
            break
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    resumed = _cli_fit(["--resume", str(tmp_path / "killed"), "--progress", "jsonl"], env)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    steps = [e for e in events(tmp_path / "killed") if e["event"] == "step"]
    after = [e for e in steps if e["time"] >= [s for s in events(tmp_path / "killed") if s["event"] == "start"][-1]["time"]]
    assert after[0]["global_step"] == 3  # continued from the checkpoint at step 2
    for event in after:
        assert event["loss"] == pytest.approx(reference[event["global_step"]], rel=1e-5, abs=1e-6)


@needs_sample
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(PYTHON).parent)) is None, reason="torchrun not installed")
def test_ddp_under_torchrun_with_two_cpu_processes(tmp_path):
    torchrun = str(Path(PYTHON).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "cxrviewer.trainer.cli", "fit",
                          "--data", f"nih:{NIH_SAMPLE}", "--architecture", "resnet18", "--input-size", "64",
                          "--batch-size", "4", "--workers", "0", "--cache", "none", "--device", "cpu",
                          "--output", str(tmp_path), "--name", "ddp", "--max-steps", "3", "--progress", "jsonl",
                          "--log-every", "1", "--max-train-images", "40", "--max-val-images", "20"],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    log = events(tmp_path / "ddp")
    assert log[0]["world"] == 2
    steps = [e for e in log if e["event"] == "step"]
    assert [e["global_step"] for e in steps] == [1, 2, 3]
    assert steps[-1]["images_per_s"] > 0
    load_model(tmp_path / "ddp" / "last.safetensors")
