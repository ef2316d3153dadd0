"""Run `spectral-distill` as its own process without paying for the torch import each time.

The bad-input catalogue runs about 250 CLI cases; as fresh processes each spends ~2 s importing
torch before it reads its first argument, nearly half of the whole suite's wall time. A fork
server imports the CLI once, and forks one child per case: the child is still its own process (its
own exit status, stderr, files, locks and signals, a crash of its own), it points its stdin,
stdout and stderr at files, takes the case's working folder and whole environment, and then runs
what the console script runs, `sys.exit(main())`, at the top level, so an uncaught exception
prints its traceback and exits 1, and interpreter shutdown (atexit, non-daemon threads, buffered
output) happens as in a fresh process. What the child cannot see is an environment variable read
while the CLI's modules are imported: the server imports them with the test process's own
environment (tests/test_bad_input.py checks that a sample of cases gives the same outcome both ways).

    with ForkServer() as server:
        proc = server.run(["distill", "--dataset", "mnist"], cwd=folder, env=env, timeout=300)

The server process is single-threaded and never computes anything, so a child starts with no
OpenMP pool or lock held by a thread it did not inherit. POSIX only (fork); `available()` says.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI_SCRIPT = os.path.join(os.path.dirname(sys.executable), "spectral-distill")


def available() -> bool:
    return hasattr(os, "fork") and os.path.exists(CLI_SCRIPT)


class ForkServer:
    """One server process; `run` is one CLI process at a time (use one server per worker thread)."""

    def __init__(self):
        self._scratch = tempfile.TemporaryDirectory(prefix="cli-forkserver-")
        self._process = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=self._scratch.name,  # the import does not come from whatever folder pytest runs in
        )
        self._count = 0

    def run(self, args, *, cwd, env: dict, timeout: float) -> subprocess.CompletedProcess:
        """`spectral-distill args...` in `cwd` with exactly the environment `env`, as run_cli."""
        self._count += 1
        out = Path(self._scratch.name, f"{self._count}.out")
        err = Path(self._scratch.name, f"{self._count}.err")
        argv = [str(a) for a in args]
        job = {"argv": argv, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err), "timeout": timeout}
        self._process.stdin.write(json.dumps(job) + "\n")
        self._process.stdin.flush()
        reply = self._process.stdout.readline()
        if not reply:
            raise RuntimeError(f"the CLI fork server stopped (exit status {self._process.wait()})")
        result = json.loads(reply)
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        out.unlink()
        err.unlink()
        if result["timed_out"]:
            raise subprocess.TimeoutExpired([CLI_SCRIPT, *argv], timeout, stdout, stderr)
        return subprocess.CompletedProcess([CLI_SCRIPT, *argv], result["returncode"], stdout, stderr)

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            self._process.wait(timeout=60)
        self._scratch.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serve():
    """The server's loop; returns the job in a forked child, None in the server at end of input."""
    while True:
        line = sys.stdin.readline()
        if not line:
            return None
        job = json.loads(line)
        sys.stdout.flush()  # nothing of the server's may sit in a buffer the child inherits
        pid = os.fork()
        if pid == 0:
            return job
        deadline, status = time.monotonic() + job["timeout"], None
        while status is None:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = raw
            elif time.monotonic() > deadline:
                try:
                    os.killpg(pid, signal.SIGKILL)  # the child and anything it started
                except ProcessLookupError:
                    pass
                status = os.waitpid(pid, 0)[1]
                sys.stdout.write(json.dumps({"returncode": None, "timed_out": True}) + "\n")
                break
            else:
                time.sleep(0.005)
        else:
            # as subprocess reports it: the exit status, or minus the signal that ended the process
            code = os.waitstatus_to_exitcode(status)
            sys.stdout.write(json.dumps({"returncode": code, "timed_out": False}) + "\n")
        sys.stdout.flush()


def _become(job) -> None:
    """In the child: the case's own process group, standard streams, folder, environment and argv."""
    os.setpgid(0, 0)
    for fd, path, flags in (
        (0, os.devnull, os.O_RDONLY),
        (1, job["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        (2, job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    ):
        opened = os.open(path, flags, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(os.devnull)  # not the server's job channel
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    sys.argv = [CLI_SCRIPT, *job["argv"]]


if __name__ == "__main__":
    # The console script's sys.path[0] is its own folder, not tests/: nothing of the tests' may import.
    sys.path[0] = os.path.dirname(CLI_SCRIPT)
    from spectral_kernels.cli import main

    job = _serve()
    if job is None:
        sys.exit(0)
    _become(job)
    sys.exit(main())
