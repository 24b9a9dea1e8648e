"""Environment fingerprint attached to every run: machine, OS, library versions, code version.

``machine_id`` hashes only what makes latencies comparable (CPU model, cores, memory,
accelerator, OS/arch); library versions and the git commit are recorded beside it so a
regression can be traced to them, but they do not change the machine identity.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

KEY_LIBRARIES = (
    "torch",
    "transformers",
    "numpy",
    "coremltools",
    "mlx",
    "mlx-lm",
    "hydra-core",
    "optuna",
    "SQLAlchemy",
    "vlm-pareto",
)


def cpu_model() -> str:
    if sys.platform.startswith("linux"):
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def memory_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # pragma: no cover - psutil is a dependency
        return None


def accelerator() -> str | None:
    """Name of the accelerator torch can see, without importing torch if it isn't loaded."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "apple-mps"
    except Exception:
        return None
    return None


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in KEY_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@lru_cache(maxsize=1)
def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the checkout this package runs from (None outside git)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def fingerprint(threads: int | None = None) -> dict[str, Any]:
    """Everything that describes where and with what a measurement was taken."""
    mem = memory_bytes()
    fp: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1) if mem else None,
        "accelerator": accelerator(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "threads": threads,
        "git": git_state(),
    }
    fp["machine_id"] = machine_id(fp)
    fp["machine"] = machine_label(fp)
    return fp


def machine_id(fp: dict[str, Any]) -> str:
    """Stable short id of the hardware + OS family (not library versions)."""
    ident = {k: fp.get(k) for k in ("cpu_model", "cpu_cores", "memory_gib", "accelerator", "arch")}
    ident["os"] = str(fp.get("os", "")).split(" ")[0]
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def machine_label(fp: dict[str, Any]) -> str:
    """Human label for figures: 'Intel Xeon ... (2 cores, 23.4 GiB)' or the accelerator."""
    parts = [str(fp.get("cpu_model") or "unknown CPU"), f"{fp.get('cpu_cores')} cores"]
    if fp.get("accelerator"):
        parts.insert(0, str(fp["accelerator"]))
    return " / ".join(parts)
