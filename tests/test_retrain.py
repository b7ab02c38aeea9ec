"""Retraining client: the fit command line, a real tiny training run followed through its JSON
events, registration of the result, cancel of the whole process tree, and failures as sentences."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cxrviewer.errors import CxrError
from cxrviewer.retrain import (
    BadRequest,
    TrainingProcess,
    TrainingRequest,
    register_result,
)
from tests.conftest import NIH_SAMPLE, REPO

TINY = {"architecture": "resnet18", "max_steps": 3, "workers": 0, "cache": "none", "max_train_images": 24,
        "max_val_images": 16}
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # two cores shared with other jobs: OpenMP threads would spin


def needs_nih() -> None:
    if not (NIH_SAMPLE / "images").is_dir():
        pytest.skip(f"real NIH sample images not present at {NIH_SAMPLE} (only beside the CI checkout)")


@pytest.fixture(autouse=True)
def _user_data(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRVIEWER_DATA_DIR", str(tmp_path / "data"))


# -- the command line ---------------------------------------------------------------------------

def test_command_passes_every_field_and_the_trainer_parses_it(tmp_path, monkeypatch):
    from cxrviewer.trainer.cli import build_parser

    store = tmp_path / "reads.db"
    store.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    request = TrainingRequest(["nih:data/nih"], method="scalp", corrections=store, epochs=2, device="cpu",
                              input_size=64, batch_size=8, output="runs",
                              options={"architecture": "resnet18", "lr": 0.001, "channels_last": False,
                                       "seed": None},
                              sets={"lam": 0.7, "data_options.n_images": 40, "flag": True})
    cmd = request.command()
    assert cmd[:4] == [sys.executable, "-m", "cxrviewer.trainer.cli", "fit"] and cmd[-2:] == ["--progress", "jsonl"]
    args = build_parser().parse_args(cmd[3:])
    assert args.command == "fit" and args.progress == "jsonl"
    assert args.data == f"nih:{tmp_path / 'data' / 'nih'}" and args.output == str(tmp_path / "runs")
    assert args.corrections == f"store:{store}" and args.method == "scalp" and args.device == "cpu"
    assert (args.epochs, args.input_size, args.batch_size, args.lr) == (2, 64, 8, 0.001)
    assert args.architecture == "resnet18" and args.channels_last is False and args.seed is None
    assert args.sets == ["lam=0.7", "data_options.n_images=40", "flag=true"]


def test_default_output_is_the_user_runs_folder(tmp_path):
    cmd = TrainingRequest(["synthetic:/x"]).command()
    assert cmd[cmd.index("--output") + 1] == str(tmp_path / "data" / "runs")


@pytest.mark.parametrize("change, fragment", [
    ({"data": []}, "choose one training data source"),
    ({"data": "nih:/x"}, "choose one training data source"),
    ({"data": ["nih:/a", "chexpert:/b"]}, "one data source at a time, not 2 (nih:/a, chexpert:/b)"),
    ({"data": ["/data/nih"]}, "'/data/nih' is not a data source; write KIND:PATH"),
    ({"device": "tpu"}, "the device must be one of auto, cpu, cuda, not 'tpu'"),
    ({"epochs": 0}, "epochs must be a positive whole number"),
    ({"batch_size": 2.5}, "batch size must be a positive whole number"),
    ({"corrections": "store:/no/such/reads.db"}, "reads.db: the corrections store does not exist."),
    ({"options": {"epoch": 3}}, "'epoch' is not a training option"),
    ({"options": {"data": "nih:/y"}}, "'data' is not a training option"),
    ({"sets": {"a=b": 1}}, "'a=b' is not a name for a --set override"),
])
def test_bad_requests_are_refused_with_one_sentence(change, fragment):
    fields = {"data": ["nih:/data/nih"], **change}
    with pytest.raises(BadRequest) as err:
        TrainingRequest(**fields).command()
    assert fragment in str(err.value) and str(err.value).endswith(".") and "\n" not in str(err.value)


# -- the process, with a stand-in trainer (fast, no torch) --------------------------------------

def fake_trainer(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-python"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


def test_events_logs_and_the_trainer_sentence(tmp_path):
    python = fake_trainer(tmp_path, """
echo 'loading...'
echo '{"event": "start", "run": "/r/run-1", "total_steps": 10}'
echo '{"event": "step", "global_step": 4}'
echo '[1, 2]'
echo 'a warning' >&2
echo 'cxrviewer-train: x.csv: the labels table has no Image Index column.' >&2
exit 2
""")
    seen, exits = [], []
    job = TrainingProcess(TrainingRequest(["nih:/x"], python=python), on_event=seen.append, on_exit=exits.append)
    assert job.state == "idle" and job.returncode is None
    assert job.start().wait(timeout=30) == 2
    assert [e["event"] for e in seen] == ["start", "step"] and job.events() == seen and exits == [job]
    assert job.log == ["loading...", "[1, 2]"]
    assert job.run_folder == Path("/r/run-1") and job.best_model is None and job.progress() == (4, 10)
    assert job.state == "failed" and list(job.stderr) == ["a warning", job.stderr[-1]]
    assert job.error == "x.csv: the labels table has no Image Index column."


def test_a_killed_trainer_and_a_failing_callback(tmp_path):
    python = fake_trainer(tmp_path, 'echo \'{"event": "start", "run": "/r"}\'\nkill -9 $$\n')

    def broken(event):
        raise RuntimeError("widget gone")

    job = TrainingProcess(TrainingRequest(["nih:/x"], python=python), on_event=broken).start()
    assert job.wait(timeout=30) == -9
    assert job.error == "the training process was killed by SIGKILL (out of memory?)."
    assert any("widget gone" in line for line in job.log) and len(job.events()) == 1


def test_a_trainer_that_cannot_start(tmp_path):
    job = TrainingProcess(TrainingRequest(["nih:/x"], python=str(tmp_path / "no-python")))
    with pytest.raises(BadRequest, match=r"^no-python: the trainer cannot be started"):
        job.start()


# -- the real trainer ---------------------------------------------------------------------------

def test_a_bad_data_path_exits_2_with_the_trainers_sentence(tmp_path):
    request = TrainingRequest([f"nih:{tmp_path / 'nowhere'}"], device="cpu", output=tmp_path / "runs")
    job = TrainingProcess(request, env=ONE_THREAD).start()
    assert job.wait(timeout=120) == 2
    assert job.state == "failed" and job.error == "nowhere: the folder for the nih data source does not exist."
    assert "cxrviewer-train: nowhere: the folder for the nih data source does not exist." in job.stderr
    assert job.run_folder is None and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_tiny_training_reports_in_order_and_registers(tmp_path):
    needs_nih()
    request = TrainingRequest([f"nih:{NIH_SAMPLE}"], device="cpu", input_size=64, batch_size=8, epochs=1,
                              output=tmp_path / "runs", options=dict(TINY))
    kinds: list[str] = []
    ended = threading.Event()
    job = TrainingProcess(request, on_event=lambda e: kinds.append(e["event"]), on_exit=lambda j: ended.set(),
                          env=ONE_THREAD)
    job.start()
    assert job.state == "running" and job.wait(timeout=240) == 0, list(job.stderr)
    assert ended.is_set() and job.state == "succeeded" and job.error is None
    assert kinds[0] == "start" and kinds[-1] == "end" and "step" in kinds and "error" not in kinds
    assert [e["event"] for e in job.events()] == kinds
    assert job.run_folder.parent == tmp_path / "runs" and job.run_folder.is_dir()
    assert job.best_model == job.run_folder / "best.safetensors" and job.best_model.is_file()
    assert job.progress() == (3, 3)

    from cxrviewer.models import installed_models, load_model, sha256_of

    entry = register_result(job.run_folder, "tiny-site")
    assert entry.path.is_file() and entry.path.parent == tmp_path / "data" / "models"
    assert installed_models()["tiny-site"].sha256 == entry.sha256 == sha256_of(entry.path)
    _, spec = load_model("tiny-site")
    assert spec.name == "tiny-site" and spec.input_size == (64, 64)
    with pytest.raises(BadRequest, match="a user model named 'tiny-site' is already installed"):
        register_result(job.run_folder, "tiny-site")
    assert register_result(job.run_folder, "tiny-site", replace=True).sha256 == entry.sha256
    with pytest.raises(BadRequest, match="is not a usable model name"):
        register_result(job.run_folder, "../escape")
    with pytest.raises(CxrError, match="the run folder does not exist"):
        register_result(tmp_path / "no-run", "other")


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


@pytest.mark.slow
def test_cancel_stops_the_whole_process_tree(tmp_path):
    needs_nih()
    if not Path("/proc/self/stat").is_file():
        pytest.skip("needs /proc to see the process group")
    options = {**TINY, "max_steps": 100000, "workers": 1, "max_train_images": 64}  # a DataLoader worker child
    request = TrainingRequest([f"nih:{NIH_SAMPLE}"], device="cpu", input_size=64, batch_size=4, epochs=1000,
                              output=tmp_path / "runs", options=options)
    stepping = threading.Event()
    job = TrainingProcess(request, on_event=lambda e: e["event"] == "step" and stepping.set(), env=ONE_THREAD)
    job.start()
    pgid = job.pid
    try:
        assert stepping.wait(timeout=240), list(job.stderr)
        deadline = time.monotonic() + 30
        while len(_group_members(pgid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_group_members(pgid)) >= 2  # the trainer and its data-loading worker
        t0 = time.monotonic()
        job.cancel(grace=5.0)
        assert time.monotonic() - t0 < 8.0
    finally:
        if job.state == "running":
            os.killpg(pgid, 9)
    assert job.state == "cancelled" and job.returncode is not None and job.returncode < 0 and job.error is None
    deadline = time.monotonic() + 5
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _group_members(pgid) == []
    assert job.best_model is None and job.events()[0]["event"] == "start"


def test_import_is_light():
    code = "import sys, cxrviewer.retrain; print(sorted(m for m in ('torch', 'PySide6', 'cv2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
