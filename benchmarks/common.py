"""Shared helpers of the benchmark scripts: environment record and result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# MIXPRO_RESULTS_DIR redirects every result file (the GPU driver sends them to the folder that comes back).
RESULTS_DIR = Path(os.environ.get("MIXPRO_RESULTS_DIR") or Path(__file__).resolve().parent / "results")


def git_commit() -> str:
    """The short commit of the checkout (``-dirty`` when tracked files changed); ``MIXPRO_COMMIT`` where the
    checkout has no ``.git`` (the GPU machine gets a copy of the working tree)."""
    if os.environ.get("MIXPRO_COMMIT"):
        return os.environ["MIXPRO_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> dict[str, Any]:
    """Machine, device and library versions for a result file."""
    import torch
    import transformers

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "commit": git_commit(),
    }


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``results/<name>.json`` with the environment record (atomically: a full disk leaves the previous
    result, never half a file) and print where it went."""
    from mixpro_hf.write_guard import atomic_write_text

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    atomic_write_text(path, json.dumps({"environment": environment(), **payload}, indent=2) + "\n")
    print(f"wrote {path}")
    return path
