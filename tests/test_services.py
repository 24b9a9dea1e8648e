"""scripts/services.sh itself: idempotent start, status, and stop of only what it started."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.slurm]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "services.sh"


def services(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def daemon_pids(state: Path) -> dict[str, str]:
    files = {
        "postgres": state / "pg" / "data" / "postmaster.pid",
        "slurmctld": state / "slurm" / "slurmctld.pid",
        "slurmd": state / "slurm" / "slurmd.pid",
        "munged": state / "munge" / "munged.pid",
    }
    return {name: f.read_text().splitlines()[0].strip() for name, f in files.items() if f.exists()}


def alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except ProcessLookupError:
        return False


def test_start_is_idempotent_and_status_answers():
    state = Path(os.environ["VLM_PARETO_SERVICES_DIR"])
    before = daemon_pids(state)
    assert set(before) == {"postgres", "slurmctld", "slurmd", "munged"}
    r = services("start", env={"VLM_PARETO_SERVICES_DIR": str(state)})
    assert r.returncode == 0 and "already running" in r.stderr, r.stderr
    assert daemon_pids(state) == before  # nothing was started twice
    st = services("status", env={"VLM_PARETO_SERVICES_DIR": str(state)})
    assert st.returncode == 0 and "postgresql: up" in st.stdout and "slurm: up" in st.stdout


def test_a_second_state_folder_starts_and_stops_only_its_own():
    main_state = Path(os.environ["VLM_PARETO_SERVICES_DIR"])
    main_pids = daemon_pids(main_state)
    # under /tmp itself: the server runs as user postgres, who cannot enter pytest's tmp_path
    state = Path(tempfile.mkdtemp(prefix="vlmp-services-test-", dir="/tmp"))
    state.chmod(0o755)
    env = {"VLM_PARETO_SERVICES_DIR": str(state), "VLM_PARETO_SERVICES_NO_INSTALL": "1"}
    try:
        r = services("start", env=env)
        assert r.returncode == 0, r.stderr
        facts = dict(
            line.split("=", 1)
            for line in (state / "services.env").read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
        assert "VLM_PARETO_TEST_PG_URL" in facts and "VLM_PARETO_TEST_SLURM_PARTITION" in facts, (
            facts
        )
        assert (
            facts["VLM_PARETO_TEST_PG_URL"] != os.environ["VLM_PARETO_TEST_PG_URL"]
        )  # its own server
        assert "127.0.0.1" in facts["VLM_PARETO_TEST_PG_URL"]  # loopback only
        conf = (state / "slurm" / "slurm.conf").read_text()
        assert "NodeAddr=127.0.0.1" in conf and "PartitionName=vlmp" in conf
        own = daemon_pids(state)
        assert set(own) == {"postgres", "slurmctld", "slurmd", "munged"} and all(
            alive(p) for p in own.values()
        )
    finally:
        services("stop", env=env)
        stopped = services("status", env=env).returncode == 1
        shutil.rmtree(state, ignore_errors=True)
    assert stopped
    assert not any(alive(p) for p in own.values())
    assert daemon_pids(main_state) == main_pids and all(alive(p) for p in main_pids.values())
