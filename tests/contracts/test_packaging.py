"""The package as users install it: one import name, complete release artifacts, a wheel with
every product file, and no symbolic link in the repository."""

from __future__ import annotations

import csv
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

import gt_remote
from tests import helpers
from tests.testbed import REPO


def build_and_install(root: Path) -> tuple[Path, Path]:
    """An sdist and a wheel built from this checkout, as a release would build them, in root/dist;
    and a fresh venv, root/env, with only the wheel and its dependencies in it (installed by this
    venv's pip, `--python`: the new venv needs no pip of its own, and ensurepip takes seconds)."""
    out, env = root / "dist", root / "env"
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)], check=True, capture_output=True, timeout=300)
    [wheel] = out.glob("gt_remote-*.whl")
    venv.create(env, with_pip=False)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env / "bin/python"), "install", "-q", str(wheel)], check=True, capture_output=True, timeout=600)
    return out, env


# Started by tests/conftest.py as soon as a run is known to hold these tests (in a thread that waits
# on the two commands), so the build runs beside the tests before them.
RELEASE = helpers.Background(build_and_install)


@pytest.fixture(scope="module")
def dist() -> Path:
    return RELEASE.result()[0]


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    [found] = dist.glob("gt_remote-*.whl")
    return found


@pytest.fixture(scope="module")
def installed() -> Path:
    return RELEASE.result()[1]


def package_files() -> set[str]:
    """Every file of the product as the wheel must name it: everything under gt_remote/."""
    return set(subprocess.run(["git", "ls-files", "gt_remote"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split())


def test_release_metadata_is_complete_and_renders(dist: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(dist.iterdir()))], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(name).decode()
    assert f"Version: {gt_remote.__version__}" in metadata
    for field in ("License-Expression: MIT", "Classifier: Programming Language :: Python :: 3.11", "Project-URL: ", "Requires-Python: >=3.11"):
        assert field in metadata, field


def test_the_only_top_level_name_installed_is_gt_remote(installed: Path) -> None:
    [record] = installed.glob("lib/python*/site-packages/gt_remote-*.dist-info/RECORD")
    with record.open() as handle:
        paths = [row[0] for row in csv.reader(handle)]
    top_level = {path.split("/")[0] for path in paths if not path.startswith("..")}
    assert top_level == {"gt_remote", record.parent.name}
    site = record.parent.parent
    assert not (site / "tunnel").exists() and not (site / "bootstrap").exists()


def test_installed_commands_run(installed: Path, tmp_path: Path) -> None:
    clean_env = {"PATH": f"{installed / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}  # no PYTHONPATH: the checkout must not help
    version = subprocess.run([str(installed / "bin/gt-remote"), "--version"], cwd=tmp_path, env=clean_env, capture_output=True, text=True)
    assert version.returncode == 0 and gt_remote.__version__ in version.stdout, version.stderr
    short = subprocess.run([str(installed / "bin/gt-remote"), "-V"], cwd=tmp_path, env=clean_env, capture_output=True, text=True)
    assert short.stdout == version.stdout
    helped = subprocess.run([str(installed / "bin/python"), "-m", "gt_remote", "--help"], cwd=tmp_path, env=clean_env, capture_output=True, text=True)
    assert helped.returncode == 0 and "Usage:" in helped.stdout, helped.stderr
    imported = subprocess.run(
        [str(installed / "bin/python"), "-c", "import gt_remote.runtime.supervisor, gt_remote.tunnel.forwarder, gt_remote.remote.ensure"],
        cwd=tmp_path, env=clean_env, capture_output=True, text=True,
    )
    assert imported.returncode == 0, imported.stderr


def test_the_repository_holds_no_symbolic_link() -> None:
    """One file, one name: a checkout without symlinks sees the same house."""
    staged = subprocess.run(["git", "ls-files", "-s"], cwd=REPO, capture_output=True, text=True, check=True).stdout.splitlines()
    assert [line for line in staged if line.startswith("120000")] == []


def test_wheel_carries_every_product_file_including_remote_side_ones(wheel: Path) -> None:
    """What the product uploads to remotes ships inside the package: a missing file breaks `up`."""
    with zipfile.ZipFile(wheel) as archive:
        inside = set(archive.namelist())
    assert "gt_remote/py.typed" in inside
    missing = package_files() - inside
    assert not missing, f"not in the wheel: {sorted(missing)}"


def test_the_installed_package_builds_the_relay_this_checkout_builds(installed: Path, tmp_path: Path) -> None:
    """What the package ships makes the same uploaded relay, byte for byte (so the same hash
    on the remote), and that file runs under the oldest Python the relay claims."""
    from gt_remote.remote.relay import build as relay_build

    script = "import sys; from pathlib import Path; from gt_remote.remote.relay import build as b; sys.stdout.write(str(b.write(Path(sys.argv[1]))))"
    built = subprocess.run([str(installed / "bin/python"), "-I", "-c", script, str(tmp_path / "out")], capture_output=True, text=True, check=True, cwd=tmp_path, timeout=60).stdout
    assert Path(built).read_bytes() == relay_build.agent()
    python_38 = Path.home() / ".pyenv/versions/3.8.18/bin/python3"
    assert subprocess.run([str(python_38), "-I", built, "--help"], capture_output=True, cwd=tmp_path, timeout=60).returncode == 0

