"""make serve-stop (dogbreed serve --stop): it stops the server its pid file names, and nothing else."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

from dogbreed.serving.server import run, stop_server

# A stand-in launcher whose command line reads like the server's: python -c ... dogbreed serve
SERVER_LIKE = [sys.executable, "-c", "import time; time.sleep(60)", "dogbreed", "serve"]


def test_it_stops_the_server_its_pid_file_names(tmp_path):
    process = subprocess.Popen(SERVER_LIKE)
    # Reaped as soon as it ends, as the real launcher (not this test's child) would be by its parent.
    reaper = threading.Thread(target=process.wait)
    reaper.start()
    pid_file = tmp_path / "serve.pid"
    pid_file.write_text(f"{process.pid}\n")
    try:
        started = time.monotonic()
        assert stop_server(pid_file, timeout_s=10) == f"stopped server {process.pid}"
        assert time.monotonic() - started < 5  # it waited for the end, not for the timeout
        reaper.join(timeout=10)
        assert process.returncode == -signal.SIGTERM
    finally:
        process.kill()


def test_a_stale_pid_file_naming_another_process_signals_nothing(tmp_path):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    pid_file = tmp_path / "serve.pid"
    pid_file.write_text(f"{bystander.pid}\n")
    try:
        assert "stale pid file" in stop_server(pid_file, timeout_s=1)
        assert bystander.poll() is None and not pid_file.exists()
    finally:
        bystander.kill()


def test_without_a_pid_file_it_says_so(tmp_path, capsys):
    assert run(["--stop", "--pid-file", str(tmp_path / "none.pid")]) == 0
    assert "no server" in capsys.readouterr().out
