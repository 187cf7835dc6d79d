"""Ctrl-C while the command line waits for a job: it stops waiting, says the job goes on on the
server, and exits 130 (against a receiver whose job never finishes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

from tests.sdk.receivers import Reply, scripted, serving

NOW = datetime.now(UTC).isoformat()
RUNNING = {
    "id": "job-1", "kind": "import", "handler": "import.rows", "state": "running",
    "progress": {"processed": 5, "total": 10, "percent": 50.0}, "counts": {}, "errors": [],
    "error_count": 0, "attempts": 1, "max_attempts": 3, "cancel_requested": False,
    "run_after": NOW, "created_at": NOW, "updated_at": NOW,
}  # fmt: skip


def test_ctrl_c_stops_the_wait_and_says_the_job_goes_on() -> None:
    with serving(scripted(Reply(200, RUNNING))) as (url, log):
        env = {**os.environ, "AUDIENCES_URL": url, "AUDIENCES_API_KEY": "aud_x"}
        process = subprocess.Popen(
            [sys.executable, "-m", "audiences", "jobs", "wait", "job-1"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while len(log) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "job-1 goes on" in stderr and "Traceback" not in stderr
