"""The optional frameworks: importing fastensors loads none of them, and an
adapter or ``safe_open(framework=...)`` whose framework is missing raises
FrameworkNotInstalled naming the extra that installs it. Each case runs in a
fresh interpreter with the framework's import blocked, so it holds whether
or not the framework is installed here."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CASES = [  # (blocked module, adapter module, framework name, extra)
    ("jax", "flax", "flax", "jax"),
    ("jax", "flax", "jax", "jax"),
    ("tensorflow", "tensorflow", "tf", "tensorflow"),
    ("paddle", "paddle", "paddle", "paddle"),
    ("mlx", "mlx", "mlx", "mlx"),
]


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_importing_fastensors_loads_no_framework(tmp_path):
    r = run(f"""
        import sys, numpy as np, fastensors, fastensors.numpy as fnp
        fnp.save_file({{"a": np.ones(3, np.float32)}}, {str(tmp_path / "a.safetensors")!r})
        with fastensors.safe_open({str(tmp_path / "a.safetensors")!r}, "np") as f:
            assert f.get_tensor("a").sum() == 3
        loaded = [m for m in ("jax", "tensorflow", "paddle", "mlx", "flax") if m in sys.modules]
        assert not loaded, loaded
    """)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("blocked,adapter,framework,extra", CASES)
def test_missing_framework_names_the_extra(tmp_path, blocked, adapter, framework, extra):
    path = str(tmp_path / "a.safetensors")
    r = run(f"""
        import sys
        sys.modules[{blocked!r}] = None  # as if it were not installed
        import numpy as np, fastensors, fastensors.numpy as fnp
        fnp.save_file({{"a": np.ones(3, np.float32)}}, {path!r})
        want = "pip install 'fastensors[{extra}]'"
        try:
            import fastensors.{adapter}
        except fastensors.FrameworkNotInstalled as e:
            assert isinstance(e, ImportError) and want in str(e), str(e)
        else:
            raise AssertionError("fastensors.{adapter} imported without {blocked}")
        for call in (lambda: fastensors.safe_open({path!r}, {framework!r}),
                     lambda: fastensors.layout.load({path!r}, "flax", framework={framework!r})):
            try:
                call()
            except fastensors.FrameworkNotInstalled as e:
                assert want in str(e) and {framework!r} in str(e), str(e)
            else:
                raise AssertionError("no error without {blocked}")
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_unknown_framework_is_invalid_argument(tmp_path):
    import numpy as np

    import fastensors
    import fastensors.numpy as fnp

    fnp.save_file({"a": np.ones(3, np.float32)}, tmp_path / "a.safetensors")
    with pytest.raises(fastensors.InvalidArgument, match="'flax'/'jax', 'tf'/'tensorflow', 'paddle', 'mlx'"):
        fastensors.safe_open(tmp_path / "a.safetensors", "caffe")
