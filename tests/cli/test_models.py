"""``dfd models ...`` and ``dfd triton`` as a user runs them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from cli.main import build_parser, main


@pytest.mark.unit
def test_model_commands_are_registered():
    parser = build_parser()
    for argv in (
        ["models", "pull"],
        ["models", "export"],
        ["models", "build", "--target", "gpu"],
        ["triton"],
    ):
        args = parser.parse_args(argv)
        assert callable(args.handler), argv
    with pytest.raises(SystemExit):
        parser.parse_args(["models", "build", "--target", "tpu"])


@pytest.mark.integration
def test_models_build_reuses_a_current_repository_and_says_where(triton, monkeypatch, capsys):
    settings = triton.settings
    monkeypatch.setenv("DFD_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("DFD_WEIGHTS_DIR", str(settings.weights_dir))
    stamp = (triton.repository / ".build-stamp.json").stat().st_mtime_ns
    assert main(["models", "build", "--target", "cpu"]) == 0
    assert f"cpu model repository: {triton.repository.resolve()}" in capsys.readouterr().out
    assert (triton.repository / ".build-stamp.json").stat().st_mtime_ns == stamp


def _dfd_triton(triton, repo) -> subprocess.Popen:
    """``dfd triton --repository repo`` as a child, its output in one text pipe."""
    env = dict(os.environ, DFD_DATA_DIR=str(triton.settings.data_dir), DFD_LOG_JSON="false")
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "triton", "--repository", str(repo)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _servers_of(repo, but: int) -> list[int]:
    """Pids of the processes (other than ``but``) whose command line names ``repo``."""
    import psutil

    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if p.pid != but and str(repo) in " ".join(p.info["cmdline"] or [])
    ]


@pytest.mark.integration
def test_dfd_triton_runs_in_the_foreground_until_interrupted(triton, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(triton.repository / "vad", repo / "vad")
    process = _dfd_triton(triton, repo)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops it." in line:
                break
        http = next(line.split()[-1] for line in lines if line.strip().startswith("http "))
        with urllib.request.urlopen(f"{http}/v2/health/ready", timeout=5) as response:
            assert response.status == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.integration
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_dfd_triton_stops_when_interrupted_while_starting(triton, tmp_path, signum):
    # The handlers used to be installed before the start: the signal only set a flag,
    # and the start ran on to "ready" (up to 120 s on a slow repository).
    repo = tmp_path / "repo"
    shutil.copytree(triton.repository, repo)  # five models: several seconds to load
    process = _dfd_triton(triton, repo)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _servers_of(repo, but=process.pid):
            time.sleep(0.05)  # until the server binary runs
        process.send_signal(signum)
        started = time.monotonic()
        output, _ = process.communicate(timeout=30)
        assert time.monotonic() - started < 10
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "triton ready" not in output
    assert process.returncode != 0
    assert _servers_of(repo, but=process.pid) == []


@pytest.mark.integration
def test_models_list_shows_what_triton_serves_for_each_role(triton, capsys):
    from dfd.settings import Settings
    from export.triton_repo import role_specs

    assert main(["models", "list", "--url", triton.grpc_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    for role, model in role_specs(Settings()).items():
        configured, *served = rows[role]
        assert configured == model.tag
        assert " ".join(served) == f"v{model.version} READY", role
    # Models on Triton that fill no single role (the ensemble) are listed too.
    assert rows["deepfake_ensemble"][0] == "-"
    assert "READY" in rows["deepfake_ensemble"]


@pytest.mark.unit
def test_models_list_without_triton_shows_the_configuration(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "visual" in out and "(no DFD_TRITON_URL)" in out


@pytest.mark.unit
def test_models_list_says_when_triton_is_unreachable(capsys):
    from dfd.ports import free_port

    assert main(["models", "list", "--url", f"127.0.0.1:{free_port()}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dfd: upstream-unavailable: models list: expected Triton's repository")


def _tiny_scores(path):
    """A fixed scores file of 20 items: visual separates the fakes, audio half does."""
    import json

    items = []
    for i in range(20):
        fake = i % 2 == 1
        items.append(
            {
                "path": f"i{i}.mp4",
                "label": "fake" if fake else "real",
                "kind": "faceswap",
                "status": "scored",
                "scores": {
                    "visual": round(0.3 + 0.4 * fake + 0.02 * (i % 5), 4),
                    "audio": None if i % 3 == 0 else round(0.2 + 0.05 * (i % 7), 4),
                },
            }
        )
    path.write_text(json.dumps({"version": 1, "folder": "tiny", "items": items}))
    return path


@pytest.mark.unit
def test_models_calibrate_is_reproducible_from_its_command(tmp_path, capsys):
    import json

    from dfd.calibration import load

    scores = _tiny_scores(tmp_path / "scores.json")
    out1, out2 = tmp_path / "c1.json", tmp_path / "c2.json"
    argv = ["models", "calibrate", str(scores), "--folds", "4", "--seed", "2"]
    assert main([*argv, "--out", str(out1)]) == 0
    assert "4-fold held-out" in capsys.readouterr().out
    assert main([*argv, "--out", str(out2)]) == 0
    assert out1.read_bytes() == out2.read_bytes()
    doc = json.loads(out1.read_text())
    assert doc["command"] == f"dfd models calibrate {scores} --folds 4 --seed 2"
    assert doc["data"][0]["items"] == 20 and doc["data"][0]["folder"] == "tiny"
    assert doc["cross_validation"]["folds"] == 4
    # Nothing audible was manipulated in a face-swap-only set: audio cannot be calibrated.
    assert "needs both classes" in doc["uncalibrated"]["audio"]
    assert set(doc["fusion"]["weights"]) == {"visual"}
    cal = load(out1)
    assert cal.version.startswith("1+")
    assert cal.fused_raw({"visual": 0.75, "audio": None}) > cal.fused_raw(
        {"visual": 0.3, "audio": None}
    )
    # Another seed: other folds, so other held-out figures, but the same fit.
    assert main([*argv[:-1], "3", "--out", str(out2)]) == 0
    other = json.loads(out2.read_text())
    assert other["detectors"] == doc["detectors"] and other["fusion"] == doc["fusion"]


@pytest.mark.unit
def test_models_calibrate_names_a_missing_scores_file(tmp_path, capsys):
    assert (
        main(
            ["models", "calibrate", str(tmp_path / "none.json"), "--out", str(tmp_path / "c.json")]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "none.json" in err and "bench_detection" in err
    assert not (tmp_path / "c.json").exists()


@pytest.mark.unit
def test_the_committed_calibration_is_what_its_command_fits(tmp_path, monkeypatch):
    """dfd/calibration.json names its command; running it again gives the same file."""
    import json
    import shlex
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    committed = root / "dfd" / "calibration.json"
    doc = json.loads(committed.read_text())
    argv = shlex.split(doc["command"])
    assert argv[:3] == ["dfd", "models", "calibrate"]
    monkeypatch.chdir(root)  # the scores files are named relative to the checkout
    out = tmp_path / "refit.json"
    assert main([*argv[1:], "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == doc
