"""The local stack's processes under supervisor (supervisord, from the `supervisor` package).

supervisord is the one process `make up` starts; it starts every program of the stack (the
servers it runs, the pools, the consumers, the relay, the inspector, HAProxy), each in its own
process group, restarts any that dies (at once after a crash, with a growing backoff while one
fails to start), stops a program's whole group, and is driven through its XML-RPC socket
(`make status`, `make restart NAME`, `make down`). An event listener (deploy/supervisor_events.py)
counts each program's unexpected exits: the restarts `make status` shows.
"""

import json
import shlex
import subprocess
import time
import xmlrpc.client
from pathlib import Path

from .processes import ROOT, VENV_BIN, Process, live_pid, pid_alive

# What supervisor's "startsecs" means: a program that exits sooner failed to start (and is tried
# again after 1, 2, 3… seconds, up to START_RETRIES times).
START_SECONDS = 1
START_RETRIES = 20


class Supervisor:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.config = run_dir / "supervisord.conf"
        self.socket = run_dir / "supervisor.sock"
        self.pid_file = run_dir / "supervisord.pid"
        self.restarts_file = run_dir / "restarts.json"

    # --- the daemon ----------------------------------------------------------------------------
    def pid(self) -> int | None:
        return live_pid(self.pid_file)

    def running(self) -> bool:
        if self.pid() is None:
            return False
        try:
            return self.rpc.supervisor.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Error):
            return False

    def write_config(self, programs: list[tuple[Process, int]]) -> None:
        """supervisord.conf for these programs, each with its priority (lower starts first and
        stops last). None starts by itself: `up` starts them in order, waiting for each layer."""
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        sections = [
            f"[unix_http_server]\nfile={self.socket}\nchmod=0700\n",
            f"[supervisord]\nlogfile={logs / 'supervisord.log'}\npidfile={self.pid_file}\n"
            f"childlogdir={logs}\nnodaemon=false\nloglevel=info\n",
            "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory=supervisor.rpcinterface:make_main_rpcinterface\n",
            f"[supervisorctl]\nserverurl=unix://{self.socket}\n",
            f"[eventlistener:restarts]\ncommand={VENV_BIN / 'python'} -m deploy.supervisor_events "
            f"{self.restarts_file}\ndirectory={ROOT}\nevents=PROCESS_STATE_EXITED\nautorestart=true\n"
            f"stderr_logfile={logs / 'supervisor-events.log'}\n",
        ]
        for process, priority in programs:
            environment = ",".join(f'{key}="{_escape(value)}"' for key, value in process.env.items())
            argv = process.argv
            if process.writes_own_log:
                argv = ["/bin/sh", "-c", 'exec "$@" >>"$0" 2>&1', str(process.log_file), *argv]
            sections.append(
                f"[program:{process.name}]\n"
                f"command={shlex.join(argv)}\n"
                f"directory={ROOT}\n"
                + (f"environment={environment}\n" if environment else "")
                + f"priority={priority}\nautostart=false\nautorestart=true\n"
                f"startsecs={START_SECONDS}\nstartretries={START_RETRIES}\n"
                "stopsignal=TERM\nstopwaitsecs=20\nstopasgroup=true\nkillasgroup=true\n"
                f"stdout_logfile={process.log_file}\nstdout_logfile_maxbytes=50MB\nredirect_stderr=true\n"
            )
        self.config.write_text("\n".join(sections))

    def start_daemon(self, env: dict, timeout: float = 15.0) -> None:
        self.restarts_file.write_text("{}")
        subprocess.run([str(VENV_BIN / "supervisord"), "-c", str(self.config)], cwd=ROOT, env=env, check=True)
        deadline = time.monotonic() + timeout
        while not self.running():
            if time.monotonic() > deadline:
                raise RuntimeError(f"supervisord did not start; see {self.run_dir / 'logs' / 'supervisord.log'}")
            time.sleep(0.05)

    def shutdown(self, timeout: float = 90.0) -> bool:
        """Stop every program (highest priority first), then supervisord; True if it was running."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            self.rpc.supervisor.shutdown()
        except (OSError, xmlrpc.client.Error):
            pass
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        return True

    # --- its programs --------------------------------------------------------------------------
    @property
    def rpc(self):
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, serverurl=f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def info(self) -> dict[str, dict]:
        """Program name -> supervisor's view of it (statename, pid, …); empty when not running."""
        if self.pid() is None:
            return {}
        try:
            return {row["name"]: row for row in self.rpc.supervisor.getAllProcessInfo()}
        except (OSError, xmlrpc.client.Error):
            return {}

    def start(self, name: str) -> None:
        try:
            self.rpc.supervisor.startProcess(name, False)
        except xmlrpc.client.Fault as fault:
            if "ALREADY_STARTED" not in fault.faultString:
                raise

    def stop(self, name: str) -> None:
        try:
            self.rpc.supervisor.stopProcess(name, True)
        except xmlrpc.client.Fault as fault:
            if "NOT_RUNNING" not in fault.faultString:
                raise

    def restarts(self) -> dict[str, int]:
        """Each program's unexpected exits (each followed by a restart) since `up`."""
        try:
            return json.loads(self.restarts_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}


def _escape(value: str) -> str:
    if '"' in value:
        raise ValueError(f"an environment value for supervisor cannot hold a double quote: {value!r}")
    return value.replace("%", "%%")  # supervisor expands %(name)s in its config


class Program(Process):
    """A program of the stack, started, stopped and watched through supervisor."""

    supervisor: Supervisor | None = None

    def pid(self) -> int | None:
        row = self.supervisor.info().get(self.name) if self.supervisor else None
        return row["pid"] if row and row["statename"] in ("RUNNING", "STARTING") and row["pid"] else None

    def state(self) -> str:
        row = self.supervisor.info().get(self.name) if self.supervisor else None
        return row["statename"] if row else "UNKNOWN"

    def start(self) -> int:
        if self.ready_file is not None:
            self.ready_file.unlink(missing_ok=True)
        self.supervisor.start(self.name)
        deadline = time.monotonic() + 30
        while self.pid() is None:
            if time.monotonic() > deadline or self.state() in ("FATAL", "EXITED"):
                raise RuntimeError(f"{self.name} did not start ({self.state()}); see {self.log_file}")
            time.sleep(0.05)
        return self.pid()

    def stop(self, timeout: float = 15.0) -> bool:
        running = self.pid() is not None
        self.supervisor.stop(self.name)
        return running
