"""`pip install .` makes a package that runs from any directory: the wheel carries the assets, the
kernel's C++ source and the configs, and `python -m omni_jax.train` finds its default config."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ["pyproject.toml", "setup.py", "README.md", "requirements.txt", "omni_jax", "configs"]


def test_the_wheel_carries_assets_kernel_source_and_configs_and_runs_elsewhere(tmp_path):
    pytest.importorskip("setuptools", reason="building the wheel offline uses the environment's setuptools")
    src = tmp_path / "src"  # a copy: the build writes build/ and *.egg-info next to the sources
    for name in SOURCES:
        path = os.path.join(ROOT, name)
        if os.path.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy(path, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("omni_jax-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assets = {os.path.relpath(os.path.join(d, f), ROOT) for d, _, fs in os.walk(os.path.join(ROOT, "omni_jax", "assets"))
              for f in fs}
    assert assets and assets <= names, assets - names
    assert {"omni_jax/kernels/cpu_gemv.cc", "omni_jax/configs/default.py",
            "omni_jax/configs/stage4_people_focus.py", "omni_jax/train.py"} <= names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "configs/"))]

    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target), JAX_PLATFORMS="cpu")
    check = ("import omni_jax, omni_jax.train as t, omni_jax.kernels.cpu_gemv as k, omni_jax.tokenizer as tok;"
             "print(omni_jax.__file__); print(t.DEFAULT_CONFIG); print(k.SOURCE.exists(), tok.load_tokenizer('tiny').eos_token)")
    proc = subprocess.run([sys.executable, "-c", check], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    package, default, rest = proc.stdout.strip().splitlines()[-3:]
    assert package.startswith(str(target)) and default == str(target / "omni_jax" / "configs" / "default.py")
    assert rest == "True <|im_end|>"
    proc = subprocess.run([sys.executable, "-m", "omni_jax.train", "--help"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(target / "omni_jax" / "configs" / "default.py") in "".join(proc.stdout.split())  # help wraps it
