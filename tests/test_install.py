"""`pip install .` works: a wheel of the checkout, installed (not editable) into a fresh venv and run from
another folder, prints --help, composes --cfg job and trains one tiny epoch on the packaged demo corpus.

Reinstalling TensorFlow & co. (~1 GB) per run would be too slow, so the fresh venv gets only the wheel
(`--no-deps`) and a .pth line that appends the dev venv's site-packages AFTER its own: every dependency is
visible, lyricslab itself comes from the wheel. A plain path in a .pth does not run that folder's own .pth
files, so the dev venv's editable finder (which points at the checkout) stays off.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, tiny

pytestmark = pytest.mark.slow

PACKAGE = ROOT / "lyricslab"
# What setuptools reads to build the wheel; the build runs on a copy so that the checkout gets no
# build/ or *.egg-info (a stale build/lib would also leak deleted files into later wheels).
BUILD_INPUTS = ["pyproject.toml", "README.md", "setup.py", "setup.cfg", "MANIFEST.in", "LICENSE"]


def package_files() -> set[str]:
    """Every file of the package in the checkout (source, configs, sweep files, data), as wheel names."""
    return {path.relative_to(ROOT).as_posix() for path in PACKAGE.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"}


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("VIRTUAL_ENV", None)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, the fresh venv's python, a work folder outside the checkout)."""
    base = tmp_path_factory.mktemp("install")
    assert ROOT not in base.parents

    src = base / "src"
    shutil.copytree(PACKAGE, src / "lyricslab", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    for name in BUILD_INPUTS:
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    dist = base / "dist"
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-q", "-w", str(dist), str(src)], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    wheels = list(dist.glob("lyricslab-*.whl"))
    assert len(wheels) == 1, wheels

    fresh = base / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True, timeout=120)
    python = fresh / "bin" / "python"
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                          "-q", str(wheels[0])], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, env=clean_env()).stdout.strip()
    dev_site = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(purelib) / "zz_lyricslab_dev_site.pth").write_text("".join(f"{path}\n" for path in dev_site))

    work = base / "work"
    work.mkdir()
    return wheels[0], python, work


def run_installed(installed, *args, timeout=120) -> subprocess.CompletedProcess:
    _, python, work = installed
    return subprocess.run([str(python), *args], cwd=work, env=clean_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_wheel_ships_every_package_file(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = package_files()
    # The ones a run cannot start without, named so that the check cannot pass vacuously.
    must = {"lyricslab/conf/config.yaml", "lyricslab/sweeps/files/demo.yaml", "lyricslab/data/demo_songs.csv"}
    groups = list((PACKAGE / "conf").glob("*/*.yaml"))
    assert len(groups) >= 20 and must | {p.relative_to(ROOT).as_posix() for p in groups} <= expected
    assert sorted(expected - names) == [], "package files the wheel leaves out (pyproject.toml package-data?)"


def test_installed_package_is_the_wheel_not_the_checkout(installed):
    _, python, work = installed
    fresh = python.parent.parent
    code = ("import sys, lyricslab, lyricslab.run, lyricslab.sweep\n"
            "from lyricslab.config.paths import CONF_DIR, SWEEPS_DIR\n"
            "from lyricslab.data.prepare import demo_path\n"
            "print(lyricslab.__file__); print(CONF_DIR / 'config.yaml'); print(SWEEPS_DIR / 'demo.yaml')\n"
            "print(demo_path())\n"
            "for name, module in sorted(sys.modules.items()):\n"
            "    if name.split('.')[0] == 'lyricslab': print(module.__file__)\n"
            "print('PATH', *sys.path, sep='\\n')\n")
    out = run_installed(installed, "-c", code)
    assert out.returncode == 0, out.stderr[-3000:]
    files, path = out.stdout.split("PATH\n")
    files = [Path(line) for line in files.splitlines()]
    assert len(files) > 8
    for file in files:
        assert fresh in file.parents and file.is_file(), f"{file} is not the installed package's"
    assert all(Path(entry).resolve() not in (ROOT, PACKAGE) for entry in path.splitlines() if entry), path
    assert work.resolve() != ROOT and ROOT not in work.resolve().parents


def test_help_and_cfg_job_from_another_folder(installed):
    out = run_installed(installed, "-m", "lyricslab.run", "--help")
    assert out.returncode == 0, out.stderr[-3000:]
    for group in sorted(p for p in (PACKAGE / "conf").iterdir() if p.is_dir()):
        options = ", ".join(sorted(f.stem for f in group.glob("*.yaml")))
        assert f"{group.name}: {options}" in out.stdout, group.name

    out = run_installed(installed, "-m", "lyricslab.run", "--cfg", "job", "model=gru")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "cell: gru" in out.stdout
    cfg = yaml.safe_load(out.stdout)
    assert cfg["model"]["cell"] == "gru" and cfg["data"]["source"] == "demo" and cfg["trainer"]["epochs"] >= 1

    out = run_installed(installed, "-m", "lyricslab.sweep", "--help")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "sweep=" in out.stdout


def test_one_tiny_epoch_from_another_folder(installed, tmp_path):
    _, python, _ = installed
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    out = run_installed(installed, "-m", "lyricslab.run", *tiny("lstm"), f"tracking.uri={uri}",
                        f"tracking.artifact_root={tmp_path}/mlruns/artifacts", f"data.cache_dir={tmp_path}/cache",
                        "baseline.order=null", timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert ": FINISHED" in out.stdout

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("lyricslab")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert 0 < run.data.metrics["val_bpc"] < 20 and 0 < run.data.metrics["best_val_bpc"] < 20
    assert run.data.params["data.source"] == "demo" and run.data.tags["model"] == "lstm"
    # The run's entry point was the installed run.py (and the demo corpus its packaged CSV, checked above).
    assert python.parent.parent in Path(run.data.tags["mlflow.source.name"]).parents
