"""The Lambda layer: built by scripts/build_layer.py, its launcher starts from an unpacked tree."""

from __future__ import annotations

import importlib.util
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.stand_ins.extension_process import ExtensionProcess

pytestmark = pytest.mark.extension

ROOT = Path(__file__).resolve().parents[2]


def _unzip_like_lambda(archive: Path, target: Path) -> None:
    # zipfile drops permission bits; Lambda keeps them, and the launcher must be executable.
    with zipfile.ZipFile(archive) as layer:
        for info in layer.infolist():
            path = Path(layer.extract(info, target))
            mode = info.external_attr >> 16
            if mode:
                path.chmod(stat.S_IMODE(mode))


def _interpreter_without_aiohttp() -> str:
    base = Path(sys.base_prefix) / "bin" / "python3"
    candidate = str(base) if base.exists() else sys.executable
    probe = subprocess.run([candidate, "-c", "import aiohttp"], capture_output=True, check=False)
    if probe.returncode == 0:
        pytest.skip(f"{candidate} has aiohttp: it could not show the layer is self-contained")
    return candidate


def test_the_launcher_starts_from_an_unpacked_layer(tmp_path: Path) -> None:
    archive = tmp_path / "layer.zip"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "build_layer.py"),
            "--dependencies",
            "environment",
            # botocore loads on the first AWS call only; /health needs the server alone.
            "--requirement",
            "aiohttp",
            "--requirement",
            "pyyaml",
            "--output",
            str(archive),
        ],
        check=True,
        capture_output=True,
    )
    names = zipfile.ZipFile(archive).namelist()
    assert "extensions/polycache-extension" in names
    assert "python/polycache/extension/__main__.py" in names
    assert any(name.startswith("python/aiohttp/") for name in names)
    # Bytecode for the target Python beside every module, unchecked-hash based: Lambda's /opt
    # is read-only, and the zip's fixed timestamps must not make it stale.
    tag = sys.implementation.cache_tag
    sources = [name for name in names if name.endswith(".py")]
    assert sources
    for source in sources:
        folder, _, module = source.rpartition("/")
        assert f"{folder}/__pycache__/{module[:-3]}.{tag}.pyc" in names, source
    header = zipfile.ZipFile(archive).read(f"python/polycache/__pycache__/__init__.{tag}.pyc")
    assert header[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(header[4:8], "little") == 0b01  # hash-based, source not checked
    opt = tmp_path / "opt"
    _unzip_like_lambda(archive, opt)
    launcher = opt / "extensions" / "polycache-extension"
    assert launcher.stat().st_mode & stat.S_IXUSR
    python = _interpreter_without_aiohttp()
    with ExtensionProcess(
        {"POLYCACHE_EXTENSION_PYTHON": python, "AWS_SESSION_TOKEN": "layer-token"},
        command=[str(launcher)],
    ) as process:
        health = process.health()
        assert health is not None
        assert health["status"] == "ok"
        assert "as polycache-extension (standalone)" in process.log()
