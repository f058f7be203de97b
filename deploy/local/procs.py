"""Process helpers shared by every component: pid files, ports, waits, start and stop."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from deploy.local.errors import StackError as StackError  # re-exported: callers use procs'
from deploy.local.layout import HOST

log = logging.getLogger(__name__)


# O_EXCL: the name must be new, so nothing planted there is reused; O_NOFOLLOW: a link
# at that name is never followed (root would write through it to any file).
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Cancelled(StackError):
    """The start was interrupted (Ctrl-C): nothing new was started."""


# Set by stack.ensure_up when Ctrl-C interrupts a start, until its component threads
# have ended: from then on they start no process, install nothing and stop waiting.
CANCEL = threading.Event()


def check_cancelled(what: str) -> None:
    if CANCEL.is_set():
        raise Cancelled(f"{what}: not started, the start was interrupted")


def is_root() -> bool:
    return os.geteuid() == 0


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0) but is gone for every purpose of ours.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def our_pid(pidfile: Path, marker: str) -> int | None:
    """Pid from the file if that process lives and is ours (its command line holds marker).

    The marker guards against a recycled pid that now belongs to an unrelated program.
    """
    pid = read_pid(pidfile)
    if pid is None or not pid_alive(pid) or marker not in cmdline(pid):
        return None
    return pid


def require_free(port: int, what: str, env: str) -> None:
    """Fail clearly when a port we need is held by a program that is not ours."""
    if port_open(port):
        raise StackError(
            f"{what}: {HOST}:{port} is already used by another program (not ours); "
            f"stop it or pick another port with {env}=<port>"
        )


def wait_for(check: Callable[[], bool], timeout: float, alive: Callable[[], bool]) -> bool:
    """Poll check until it holds; give up early when the process died (alive is false)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        if not alive():
            return check()
        check_cancelled("waiting")
        time.sleep(0.25)
    return False


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def failure(what: str, logfile: Path, why: str) -> StackError:
    return StackError(f"{what}: {why}; last lines of {logfile}:\n{tail(logfile)}")


def require_binary(name: str, fix: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(f"{name} not found; run: {fix}")
    return path


def service_user() -> str | None:
    """OS user that PostgreSQL runs as: postgres when we are root (it refuses root)."""
    if not is_root():
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise StackError("OS user postgres missing; run: apt-get install -y postgresql") from exc
    return "postgres"


def as_user(argv: Sequence[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if user else list(argv)


def chown(path: Path, user: str | None) -> None:
    if user:
        # Not through a link: the user could swap its own file for one to /etc/shadow.
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def run(
    argv: Sequence[str],
    what: str,
    timeout: float = 120,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    cancellable: bool = True,
) -> str:
    """Run a short command; its output becomes the error message when it fails.

    Once a start is interrupted (:data:`CANCEL`), a cancellable command is not run."""
    if cancellable:
        check_cancelled(what)
    try:
        done = subprocess.run(  # noqa: S603 - argv built by us, never by a shell
            list(argv), capture_output=True, text=True, timeout=timeout, check=False,
            cwd=cwd, env=env,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()[-2000:]
        raise StackError(f"{what} failed (exit {done.returncode}): {output}")
    return done.stdout


# Components start in parallel threads, and two apt-get runs at once fail on dpkg's lock:
# installs take turns (and wait for another program's apt-get rather than fail).
_APT = threading.Lock()
_APT_UPDATED: list[bool] = []


def apt_install(packages: Sequence[str], what: str) -> None:
    """Install Debian packages as root (the package lists refreshed once per process)."""
    command = f"apt-get install -y --no-install-recommends {' '.join(packages)}"
    if not is_root():
        raise StackError(f"{what} not installed; run: sudo {command}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait_for_lock = ["-o", "DPkg::Lock::Timeout=600"]
    check_cancelled(command)
    with _APT:
        # Interrupted while another thread's install ran (Ctrl-C ended its apt-get).
        check_cancelled(command)
        with no_daemon_starts():
            if not _APT_UPDATED:
                run(["apt-get", *wait_for_lock, "update"], "apt-get update", timeout=900, env=env)
                _APT_UPDATED.append(True)
            install = ["apt-get", *wait_for_lock, "install", "-y", "--no-install-recommends"]
            run([*install, *packages], command, timeout=900, env=env)
        disable_at_boot(packages)


# Their postinst enables them at boot (policy-rc.d below only keeps them from starting
# during the install): on a systemd machine, nginx's default site would take 0.0.0.0:80
# and the system's Prometheus 0.0.0.0:9090 after the next reboot.
NOT_AT_BOOT = ("nginx", "prometheus")
SYSTEMD_RUNNING = Path("/run/systemd/system")


def disable_at_boot(packages: Sequence[str]) -> None:
    """``systemctl disable`` the installed packages' daemons we run ourselves; a failure
    is only a warning (the install itself succeeded)."""
    units = [package for package in packages if package in NOT_AT_BOOT]
    if not units or not SYSTEMD_RUNNING.is_dir() or shutil.which("systemctl") is None:
        return
    what = f"systemctl disable {' '.join(units)}"
    try:
        run(["systemctl", "disable", *units], what, timeout=60, cancellable=False)
    except StackError as exc:
        log.warning("%s; they may start at boot and hold our ports", exc)


# Debian's maintainer scripts start a package's daemon unless this script forbids it
# (exit 101): installing prometheus would start the system's on 0.0.0.0:9090, the port
# we need, and nginx its default site on 0.0.0.0:80.
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
_FORBID_STARTS = "#!/bin/sh\n# deploy/local/procs.py, during apt-get install only\nexit 101\n"


def _left_by_us(policy: Path) -> bool:
    try:
        return policy.read_text() == _FORBID_STARTS
    except OSError:
        return False


@contextlib.contextmanager
def no_daemon_starts() -> Iterator[None]:
    """While inside, no package starts its daemon; a policy found in place is left as is."""
    policy = POLICY_RC_D
    try:
        fd = os.open(policy, _NEW_FILE, 0o700)
    except FileExistsError:
        if not _left_by_us(policy):
            yield  # the administrator's (or a container image's) own policy rules
            return
        # Ours, left by a run killed during an install: it would keep forbidding every
        # package's daemon on this machine. It goes once this install is done.
        try:
            yield
        finally:
            policy.unlink(missing_ok=True)
        return
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(_FORBID_STARTS)
            os.fchmod(handle.fileno(), 0o755)
        yield
    finally:
        policy.unlink(missing_ok=True)  # ours: O_EXCL made it, nobody else's is removed


# A throw-away interpreter starts the daemon and exits at once. The daemon is thus never
# our child: no zombie when it dies, and no "subprocess still running" ResourceWarning
# (an error under pytest's filterwarnings=error) when our Popen object is collected.
#
# With an exit file, a small watcher (in its own session) starts the daemon, tells its
# pid, and writes "<pid> <exit code>" to that file when it ends: the daemon, not our
# child, has nobody else to collect its exit code. The daemon still gets a session of
# its own (its pid is its process group, as without the watcher).
_WATCHER = """\
import os, sys
exit_path, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.setsid()
        os.dup2(2, 1)
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
print(pid, flush=True)
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
with open(exit_path + ".tmp", "w") as handle:
    handle.write(f"{pid} {code}\\n")
os.replace(exit_path + ".tmp", exit_path)
"""
_LAUNCHER = f"""\
import subprocess, sys
log_path, exit_path, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(log_path, "ab") as log:
    if exit_path:
        watcher = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", {_WATCHER!r}, exit_path, *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
            start_new_session=True)
        print(watcher.stdout.readline().decode().strip())
    else:
        daemon = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        print(daemon.pid)
"""


def spawn(
    argv: Sequence[str],
    logfile: Path,
    pidfile: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    exit_file: Path | None = None,
) -> int:
    """Start a daemon in its own session so Ctrl-C or our exit never stops it; with
    ``exit_file``, "<pid> <exit code>" is written there when it ends (see exit_code)."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    if exit_file is not None:
        exit_file.unlink(missing_ok=True)
    watch = "" if exit_file is None else str(exit_file)
    launcher = [sys.executable, "-c", _LAUNCHER, str(logfile), watch, *argv]
    output = run(launcher, f"starting {argv[0]}", timeout=30, cwd=cwd, env=env).strip()
    try:
        pid = int(output)
    except ValueError:
        raise failure(f"starting {argv[0]}", logfile, "no pid came back") from None
    write_atomic(pidfile, f"{pid}\n")
    return pid


def exit_code(exit_file: Path, pid: int) -> int | None:
    """The exit code spawn's watcher recorded for process ``pid`` (negative: the signal
    that ended it), or None when it did not (still running, or another process's)."""
    try:
        recorded, code = exit_file.read_text().split()
        return int(code) if int(recorded) == pid else None
    except (OSError, ValueError):
        return None


def stop_pid(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM, wait up to timeout, then SIGKILL the whole process group."""
    stop_pids([pid], timeout)


def stop_pids(pids: Iterable[int], timeout: float = 20.0) -> None:
    """:func:`stop_pid` for several processes at once: each gets its SIGTERM first, so
    their graceful stops (leaving consumer groups, draining) overlap instead of adding
    up; then the ones still running after ``timeout`` are killed."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while (alive := [pid for pid in pids if pid_alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in alive:
        log.warning("pid %s ignored SIGTERM for %.0fs; killing it", pid, timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)


def stop_daemon(pid: int | None, pidfile: Path, wipe: Path | None, timeout: float) -> None:
    """Stop a daemon of the stack (if it runs), forget its pid file, and delete its state
    folder when ``wipe`` names one."""
    if pid:
        stop_pid(pid, timeout=timeout)
    pidfile.unlink(missing_ok=True)
    if wipe is not None:
        shutil.rmtree(wipe, ignore_errors=True)


def write_atomic(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write text if it differs; a reader never sees half a file. True when it changed."""
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return False
    replace_with(path, text.encode(), mode)
    return True


def replace_with(path: Path, data: bytes, mode: int) -> None:
    """Put data at path through a fresh temporary file, created 0600 so that a private
    key is not readable by others even before it gets its final mode."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, _NEW_FILE, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), mode)  # exact, whatever the umask
        os.replace(tmp, path)  # replaces a link at path itself, never its target
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def locked(lockfile: Path) -> Iterator[None]:
    """Serialise up/down of one state dir (parallel test workers call ensure_up)."""
    lockfile.parent.mkdir(parents=True, exist_ok=True)
    with lockfile.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def describe(pid: int | None, ready: bool, ports: Sequence[int], address: str) -> tuple[bool, str]:
    """(running and ours, one status line) of a component."""
    if pid and ready:
        return True, f"running pid {pid}  {address}"
    if pid:
        return False, f"pid {pid} runs but does not answer yet  {address}"
    taken = [str(port) for port in ports if port_open(port)]
    if taken:
        return False, f"port {', '.join(taken)} held by another program"
    return False, "stopped"
