"""What every benchmark records: the machine it ran on, and a process's memory (RSS, its peak)."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys

__all__ = ["current_rss_mib", "machine_description", "peak_rss_mib", "reset_peak_rss"]


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (VmHWM; ru_maxrss as fallback)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = ""
    try:
        with open("/proc/meminfo") as fh:
            kib = int(fh.readline().split()[1])
        ram = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    code = "import torch, monai; print(torch.__version__, monai.__version__, torch.get_num_threads())"
    versions = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True).stdout.split()
    tv, mv, threads = (versions + ["?", "?", "?"])[:3]
    return (f"{cpu} ({platform.machine()}), {os.cpu_count()} cores{ram}, Python {platform.python_version()}, "
            f"torch {tv} ({threads} threads), MONAI {mv}, {platform.platform()}")
