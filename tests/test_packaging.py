"""The wheel ships the CUDA sources (kernels/) and they are found through the package."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("hatchling", reason="hatchling (dev extras) builds the wheel")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    (path,) = out.glob("gpu_als-*.whl")
    return path


def test_wheel_contains_every_kernel_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = sorted(p.name for p in (ROOT / "kernels").iterdir() if p.is_file())
    assert sources, "kernels/ is empty"
    for name in sources:
        assert f"gpu_als/kernels/{name}" in names


def test_installed_wheel_finds_its_kernels(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
         str(wheel)],
        check=True, capture_output=True, text=True,
    )
    code = ("import gpu_als; from gpu_als.backends._kernels import kernel_dir, kernel_files; "
            "print(gpu_als.__file__); print(kernel_dir()); "
            "print(*[p.name for p in kernel_files()])")
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True,
                            capture_output=True, text=True)
    module_file, folder, files = result.stdout.splitlines()
    assert module_file.startswith(str(site)), "imported the checkout, not the wheel"
    assert Path(folder) == site / "gpu_als" / "kernels"
    assert files.split() == sorted(p.name for p in (ROOT / "kernels").iterdir() if p.is_file())



def test_missing_kernels_name_both_places_looked_in(tmp_path, monkeypatch):
    from gpu_als.backends import _kernels

    package = tmp_path / "site" / "gpu_als"
    package.mkdir(parents=True)
    monkeypatch.setattr(_kernels, "_PACKAGE_DIR", package)
    with pytest.raises(FileNotFoundError) as error:
        _kernels.kernel_dir()
    assert str(error.value) == (
        f"the CUDA kernel sources were not found in {package / 'kernels'} (installed wheel) "
        f"nor in {tmp_path / 'site' / 'kernels'} (source checkout); reinstall gpu-als")
