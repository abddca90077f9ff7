"""``fastensors demo``: the README's first command."""

import subprocess
import sys

from fastensors import demo


def test_demo_runs_and_checks_itself():
    lines = []
    assert demo.run(out=lines.append) == 0
    text = "\n".join(lines)
    assert "round-tripped byte for byte" in text
    assert "28 linear weights quantized, 12 tensors kept dense" in text  # lm_head and embeddings stay dense
    assert "the dequantized model equals fastensors.dequantize" in text


def test_demo_command():
    r = subprocess.run([sys.executable, "-m", "fastensors", "demo"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("OK:")
