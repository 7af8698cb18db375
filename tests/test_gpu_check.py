"""benchmarks/gpu_check.sh: its CPU fallback runs and prints the table of the GPU run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_its_cpu_fallback():
    env = {**os.environ, "MUPD_GPU_CHECK_TINY": "1", "PYTHON": sys.executable}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("OUT", None)
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--train-timeout", "240"],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "no GPU run" in out and "CPU fallback" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "| cpu |" in line]
    checks = [row.split(" | ")[0].lstrip("| ") for row in rows]
    assert [c.split(",")[0].split(" (")[0] for c in checks] == [
        "128 px region",
        "128 px region",
        "transformer forward",
        "transformer forward",
        "mupd train through accelerate",
        "whole-slide job",
    ]
    assert "| fp32 |" in rows[0] and "| bf16 |" in rows[1]
    assert "failed" not in rows[4] and rows[4].rstrip().endswith("| yes |")
    assert "(1.00x;" in rows[5]  # each tile of the job computed once
