"""A real single-node Slurm for the tests: Debian's slurmctld and slurmd, run by hand.

The daemons get their own configuration, state, spool, logs and ports under a temporary
folder (``SLURM_CONF`` points the client commands at it), run as root with
``AuthType=auth/none`` (no munge), and are stopped — exactly those two processes — when
the session ends. ``.ci/run`` installs the packages when they are missing; without them,
or without root, :func:`unavailable` says why and the tests skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NODE = "a3dnode"
PARTITION = "debug"


def unavailable() -> str | None:
    """Why a local Slurm cannot be started here, or None."""
    missing = [b for b in ("slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scontrol", "scancel")
               if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if missing:
        return (f"Slurm is not installed ({', '.join(missing)} missing): .ci/run installs Debian's slurmctld, slurmd "
                "and slurm-client; or apt-get install them")
    if os.geteuid() != 0:
        return "the local Slurm daemons run as root (slurmd starts jobs as their user); run the tests as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 2048


def _bin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin") / name)


class LocalSlurm:
    """Start with :meth:`start`, stop with :meth:`stop`; ``env`` holds ``SLURM_CONF``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}
        self.cpus = os.cpu_count() or 1

    def write_conf(self) -> None:
        r = self.root
        for sub in ("state", "spool", "log"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text("\n".join([
            "ClusterName=a3dtest",
            f"SlurmctldHost={socket.gethostname().split('.')[0]}(127.0.0.1)",  # must be this host's name
            "MailProg=/bin/true",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "AuthType=auth/none", "CredType=cred/none",
            "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}", f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "SchedulerType=sched/backfill", "SchedulerParameters=sched_interval=1",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "MinJobAge=86400", "ReturnToService=2", "MpiDefault=none", "KillWait=5",
            f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={int(_mem_mb() * 0.9)} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n")

    def run(self, *cmd: str, check: bool = True) -> str:
        out = subprocess.run(list(cmd), capture_output=True, text=True, env={**os.environ, **self.env})
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip()}")
        return out.stdout

    def start(self, timeout: float = 60.0) -> "LocalSlurm":
        self.write_conf()
        env = {**os.environ, **self.env}
        subprocess.run([_bin("slurmctld"), "-f", str(self.conf)], check=True, env=env)
        subprocess.run([_bin("slurmd"), "-f", str(self.conf), "-N", NODE], check=True, env=env)
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            state = self.run("sinfo", "-h", "-o", "%T", check=False).strip()
            if state.startswith("idle"):
                return self
            time.sleep(0.5)
        self.stop()
        log = (self.root / "log" / "slurmctld.log").read_text()[-2000:]
        raise RuntimeError(f"the local Slurm did not come up (node state {state!r}); slurmctld.log:\n{log}")

    def stop(self) -> None:
        self.run("scancel", "--full", "--user", "root", check=False)
        for name in ("slurmd.pid", "slurmctld.pid"):
            pid_file = self.root / name
            if not pid_file.is_file():
                continue
            try:
                pid = int(pid_file.read_text().strip())
                os.kill(pid, signal.SIGTERM)
            except (ValueError, ProcessLookupError):
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)

    # ------------------------------------------------------------------ jobs
    def job(self, job_id: str) -> list[dict[str, str]]:
        """``scontrol show job`` records of a job (one per array task)."""
        out = self.run("scontrol", "show", "job", "-o", str(job_id), check=False)
        records = []
        for line in out.splitlines():
            rec = {}
            for item in line.split():
                key, _, value = item.partition("=")
                rec[key] = value
            records.append(rec)
        return records

    def wait(self, job_ids: list[str], timeout: float = 600.0) -> dict[str, list[dict[str, str]]]:
        """Wait until every task of ``job_ids`` has ended; return their records."""
        deadline = time.time() + timeout
        ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED")
        while time.time() < deadline:
            records = {j: self.job(j) for j in job_ids}
            if all(recs and all(r.get("JobState") in ended for r in recs) for recs in records.values()):
                return records
            time.sleep(1.0)
        raise TimeoutError(f"jobs {job_ids} still running after {timeout} s: "
                           f"{ {j: [r.get('JobState') for r in self.job(j)] for j in job_ids} }")
