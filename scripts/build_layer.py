"""Build the polycache Lambda extension layer as a zip.

    extensions/polycache-extension   the launcher Lambda starts at INIT (a POSIX sh script)
    python/polycache/...             the package
    python/<dependencies>            aiohttp, botocore, PyYAML and what they need
    **/__pycache__/*.cpython-3XX.pyc bytecode for the target Python, unchecked-hash based

Lambda unpacks a layer onto a read-only /opt, where Python cannot write the bytecode it compiles:
without .pyc files every cold start compiles every module it imports again. So the layer ships
them, compiled by an interpreter of the target version (this one, or `python3.X` on PATH) in
unchecked-hash mode: the zip's fixed timestamps cannot make them stale, and no import reads the
source to check them.

Usage:
    python scripts/build_layer.py                          # wheels for Lambda x86_64, Python 3.11
    python scripts/build_layer.py --architecture arm64 --python-version 3.12
    python scripts/build_layer.py --dependencies environment   # copy this environment's (offline)
    python scripts/build_layer.py --tree build/layer           # also leave the unpacked tree
    python scripts/build_layer.py --no-bytecode                # sources only (not advised)

`--dependencies wheels` (the default) installs manylinux wheels for the Lambda platform with
`uv pip install --target` (or pip); `environment` copies the distributions installed here, which
only suits a layer for the same platform and Python version; `none` ships the package alone.
The layer needs a Python runtime (or a `python3` on the function's PATH); the wheels must match
its version.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "polycache"
DEFAULT_REQUIREMENTS = ("aiohttp>=3.9", "botocore>=1.35", "pyyaml>=6")
PLATFORMS = {"x86_64": "x86_64-manylinux2014", "arm64": "aarch64-manylinux2014"}
PIP_PLATFORMS = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
# Fixed timestamps make the zip depend on its contents only.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)

LAUNCHER = """#!/bin/sh
# Lambda starts every executable in /opt/extensions during INIT. This one runs the polycache
# extension with the packages this layer put under /opt/python, ahead of the function's own.
set -eu
layer="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$layer/python${PYTHONPATH:+:$PYTHONPATH}"
# Lambda expects an extension to register under the file name it started.
POLYCACHE_EXTENSION_NAME="${POLYCACHE_EXTENSION_NAME:-$(basename "$0")}"
export POLYCACHE_EXTENSION_NAME
exec "${POLYCACHE_EXTENSION_PYTHON:-python3}" -m polycache.extension
"""


def _ignored(directory: str, names: list[str]) -> list[str]:
    return [name for name in names if name == "__pycache__" or name.endswith((".pyc", ".pyo"))]


def write_tree(
    tree: Path,
    *,
    dependencies: str,
    requirements: Iterable[str],
    architecture: str,
    python_version: str,
) -> None:
    """Lay out the layer's files under `tree` (which must not exist yet)."""
    launcher = tree / "extensions" / "polycache-extension"
    launcher.parent.mkdir(parents=True)
    launcher.write_text(LAUNCHER)
    launcher.chmod(0o755)
    site = tree / "python"
    site.mkdir()
    shutil.copytree(PACKAGE, site / "polycache", ignore=_ignored)
    requirements = list(requirements)
    if dependencies == "wheels":
        _install_wheels(site, requirements, architecture, python_version)
    elif dependencies == "environment":
        _copy_environment(site, requirements)


def compile_bytecode(tree: Path, python_version: str) -> int:
    """Compile every .py under `tree` for `python_version`; return how many .pyc were written.

    Raises:
        SystemExit: No interpreter of that version is at hand.
    """
    current = f"{sys.version_info.major}.{sys.version_info.minor}"
    if current == python_version:
        python: str | None = sys.executable
    else:
        python = shutil.which(f"python{python_version}")
    if python is None:
        raise SystemExit(
            f"no python{python_version} to compile the layer's bytecode with: install one, "
            f"build for {current} (--python-version {current}), or pass --no-bytecode"
        )
    command = [python, "-m", "compileall", "-q", "-q", "-j", "0"]
    command += ["--invalidation-mode", "unchecked-hash", str(tree)]
    # Files a dependency ships that are not valid Python (templates, tests for other versions)
    # are left as they are: compileall reports them and goes on.
    subprocess.run(command, check=False)
    return sum(1 for _ in tree.rglob("*.pyc"))


def _install_wheels(
    site: Path, requirements: list[str], architecture: str, python_version: str
) -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is not None:
        command = [
            uv, "pip", "install", "--target", str(site), "--python", sys.executable,
            "--python-platform", PLATFORMS[architecture], "--python-version", python_version,
            "--only-binary", ":all:", *requirements,
        ]  # fmt: skip
    else:
        command = [
            sys.executable, "-m", "pip", "install", "--target", str(site),
            "--platform", PIP_PLATFORMS[architecture], "--python-version", python_version,
            "--implementation", "cp", "--only-binary=:all:", *requirements,
        ]  # fmt: skip
    subprocess.run(command, check=True)


def _requirement_names(distribution: importlib.metadata.Distribution) -> list[str]:
    names = []
    for requirement in distribution.requires or []:
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        if name is None:
            continue
        marker = requirement.partition(";")[2]
        if "extra" in marker:
            continue
        if marker.strip():
            try:
                from packaging.markers import Marker

                if not Marker(marker).evaluate():
                    continue
            except ImportError:
                pass
        names.append(name.group(0))
    return names


def _copy_environment(site: Path, requirements: list[str]) -> None:
    pending = [
        re.split(r"[^A-Za-z0-9._-]", requirement, maxsplit=1)[0] for requirement in requirements
    ]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        canonical = re.sub(r"[-_.]+", "-", name).lower()
        if canonical in seen:
            continue
        seen.add(canonical)
        distribution = importlib.metadata.distribution(name)
        for file in distribution.files or []:
            relative = Path(str(file))
            if relative.parts[0] == ".." or "__pycache__" in relative.parts:
                continue
            source = Path(str(distribution.locate_file(file)))
            if source.is_file():
                target = site / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        pending.extend(_requirement_names(distribution))


def write_zip(tree: Path, output: Path) -> None:
    """Zip `tree` deterministically, keeping each file's permission bits."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for path in sorted(tree.rglob("*")):
            if not path.is_file():
                continue
            info = zipfile.ZipInfo(path.relative_to(tree).as_posix(), ZIP_TIME)
            info.external_attr = (stat.S_IFREG | (path.stat().st_mode & 0o777)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "dist" / "polycache-extension.zip")
    parser.add_argument(
        "--dependencies", choices=("wheels", "environment", "none"), default="wheels"
    )
    parser.add_argument(
        "--requirement",
        action="append",
        dest="requirements",
        help="a dependency to ship (repeatable; default: aiohttp, botocore, pyyaml)",
    )
    parser.add_argument("--architecture", choices=tuple(PLATFORMS), default="x86_64")
    parser.add_argument("--python-version", default="3.11")
    parser.add_argument("--tree", type=Path, help="also keep the unpacked layer here")
    parser.add_argument(
        "--no-bytecode",
        dest="bytecode",
        action="store_false",
        help="ship sources only (every cold start then compiles what it imports)",
    )
    options = parser.parse_args(arguments)
    with tempfile.TemporaryDirectory(prefix="polycache-layer-") as scratch:
        tree = options.tree or Path(scratch) / "layer"
        if tree.exists():
            parser.error(f"{tree} exists; give a new directory")
        write_tree(
            tree,
            dependencies=options.dependencies,
            requirements=options.requirements or DEFAULT_REQUIREMENTS,
            architecture=options.architecture,
            python_version=options.python_version,
        )
        compiled = compile_bytecode(tree, options.python_version) if options.bytecode else 0
        write_zip(tree, options.output)
    size = options.output.stat().st_size
    print(f"wrote {options.output} ({size / 1e6:.1f} MB, {compiled} .pyc files)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
