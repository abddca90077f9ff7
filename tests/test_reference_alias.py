"""The ``safetensors`` alias package (tests/reference_alias/) that runs the
reference package's own tests against fastensors: it must forward every
module to fastensors' (the same objects), and its runner must say clearly
when the reference tests are absent."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ALIAS = os.path.join(HERE, "reference_alias")
RUNNER = os.path.join(ALIAS, "run.py")


def in_alias(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ALIAS, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=HERE, capture_output=True, text=True,
                          timeout=300)


def test_alias_forwards_the_package_and_numpy():
    r = in_alias(
        "import safetensors, safetensors.numpy, fastensors, fastensors.numpy\n"
        "assert safetensors.FASTENSORS_ALIAS and safetensors.__file__.startswith(%r)\n"
        "assert safetensors.numpy is fastensors.numpy\n"
        "for n in ('safe_open', 'serialize', 'serialize_file', 'deserialize', 'SafetensorError', 'TensorSpec',"
        " '_safe_open_handle', '__version__', 'open_checkpoint'):\n"
        "    assert getattr(safetensors, n) is getattr(fastensors, n), n\n" % ALIAS)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("module,needs", [("torch", "torch"), ("flax", "jax"), ("mlx", "mlx")])
def test_alias_forwards_framework_modules(module, needs):
    if importlib.util.find_spec(needs) is None:
        pytest.skip(f"{needs} is not installed")
    r = in_alias(f"import safetensors.{module} as a, fastensors.{module} as b; assert a is b")
    assert r.returncode == 0, r.stderr


def test_runner_says_when_the_reference_tests_are_absent(tmp_path):
    env = dict(os.environ, FASTENSORS_REFERENCE_TESTS=str(tmp_path / "nowhere"))
    r = subprocess.run([sys.executable, RUNNER, "test_simple.py"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 3
    assert "absent" in r.stdout and "nowhere" in r.stdout


def test_runner_fails_on_a_failing_file_and_passes_a_passing_one(tmp_path):
    """With a stand-in reference directory: one file that passes through the
    alias, one that fails; the runner's status must tell them apart."""
    (tmp_path / "test_ok.py").write_text(
        "import numpy as np\nfrom safetensors.numpy import save, load\n"
        "def test_round_trip():\n    assert load(save({'a': np.ones(3)}))['a'].tolist() == [1, 1, 1]\n"
        "def test_is_alias():\n    import safetensors; assert safetensors.FASTENSORS_ALIAS\n")
    (tmp_path / "test_bad.py").write_text("def test_fails():\n    assert False\n")
    env = dict(os.environ, FASTENSORS_REFERENCE_TESTS=str(tmp_path))
    ok = subprocess.run([sys.executable, RUNNER, "test_ok.py"], env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "1 of 1 files passed" in ok.stdout
    bad = subprocess.run([sys.executable, RUNNER, "test_ok.py", "test_bad.py"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 1 and "failed: test_bad.py" in bad.stdout
