"""A watchdog for AUTO-07p: time and output limits, no orphans, no leftover folders.

bifpy 0.3.0 (``transpile=True``) compiles the model and runs the AUTO
executable with ``subprocess.run`` in a fresh ``tempfile.mkdtemp(prefix=
"bifpy-")`` folder, where AUTO writes ``fort.7``/``fort.8``/``fort.9``. That
call waits for ever (``ds = nan`` made AUTO write fort.9 at 10 MB/s without
end), survives the death of Python, and the folder is left behind on
Ctrl-C, SIGTERM or SIGKILL.

This module, hooked into bifpy only by :mod:`bifnet.continuation._auto`:

* runs the executable in its own process group, dying with its parent
  (``PR_SET_PDEATHSIG``), polled every 0.1 s: it is killed when it runs longer
  than :func:`time_limit` seconds or its folder grows past
  :func:`output_limit` bytes (:class:`~bifnet.errors.ContinuationError`), and
  on any exception in Python (Ctrl-C, SIGTERM);
* records every ``bifpy-*`` folder bifpy creates, and removes it when the
  call ends, however it ends;
* starts one small guardian process per Python process, which holds the list
  of live executables and folders through a pipe: when this process dies,
  even by SIGKILL, the pipe closes and the guardian kills the executables and
  removes the folders.

Limits come from the environment: ``BIFNET_AUTO_TIME_LIMIT`` (seconds,
default 3600) and ``BIFNET_AUTO_MAX_OUTPUT_MB`` (default 1024).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bifnet.errors import ContinuationError

log = logging.getLogger("bifnet")

_PR_SET_PDEATHSIG = 1


def time_limit() -> float:
    """Seconds one AUTO run may take (``BIFNET_AUTO_TIME_LIMIT``, default 3600)."""
    return _env_number("BIFNET_AUTO_TIME_LIMIT", 3600.0)


def output_limit() -> float:
    """Bytes one AUTO run may write (``BIFNET_AUTO_MAX_OUTPUT_MB``, default 1024 MB)."""
    return _env_number("BIFNET_AUTO_MAX_OUTPUT_MB", 1024.0) * 1024 * 1024


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ContinuationError(f"{name} must be a positive number, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise ContinuationError(f"{name} must be a positive finite number, got {text!r}")
    return value


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except Exception:  # pragma: no cover - best effort
        pass


# ---------------------------------------------------------------------------
# the guardian: cleans up after this process when it dies

_GUARDIAN_CODE = r"""
import os, shutil, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pids, dirs = set(), set()
for line in sys.stdin:
    op, _, arg = line.rstrip("\n").partition(" ")
    if op == "+pid": pids.add(int(arg))
    elif op == "-pid": pids.discard(int(arg))
    elif op == "+dir": dirs.add(arg)
    elif op == "-dir": dirs.discard(arg)
for pid in pids:
    try: os.killpg(pid, signal.SIGKILL)
    except OSError: pass
for d in dirs:
    shutil.rmtree(d, ignore_errors=True)
"""

_lock = threading.Lock()
_guardian: dict = {}
#: Set by :func:`stop_all`: every running executable is killed and no new one starts (the runs of other
#: threads, when the main thread is interrupted).
_stopping = threading.Event()
_live: set = set()


def stop_all() -> None:
    """Kill every AUTO executable this process runs (on any thread) and refuse new ones until
    :func:`allow_runs`; for a step whose branches run on threads when the main thread is interrupted."""
    _stopping.set()
    with _lock:
        live = list(_live)
    for process in live:
        _kill_group(process, wait=False)


def allow_runs() -> None:
    """Undo :func:`stop_all`."""
    _stopping.clear()


def _tell(message: str) -> None:
    with _lock:
        process = _guardian.get("process")
        if process is None or process.poll() is not None or _guardian.get("pid") != os.getpid():
            try:
                process = subprocess.Popen([sys.executable, "-c", _GUARDIAN_CODE], stdin=subprocess.PIPE,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                                           start_new_session=True, close_fds=True)
            except OSError as error:  # pragma: no cover - no guardian: the in-process cleanup still runs
                log.debug("AUTO guardian not started: %s", error)
                return
            _guardian.update(process=process, pid=os.getpid())
        try:
            process.stdin.write(message + "\n")
            process.stdin.flush()
        except (OSError, ValueError):  # pragma: no cover
            pass


def guard_folder(path: str) -> None:
    """Have ``path`` removed even if this process is killed."""
    _tell(f"+dir {path}")


def release_folder(path: str) -> None:
    """``path`` is kept on purpose (or already removed): forget it."""
    _tell(f"-dir {path}")


# ---------------------------------------------------------------------------
# running the executable

def _folder_size(folder: Path) -> int:
    total = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    pass
    except OSError:
        pass
    return total


def _kill_group(process: subprocess.Popen, wait: bool = True) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        pass
    if not wait:  # another thread is waiting for it
        return
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover
        pass


def run_executable(args, *, cwd, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(args, cwd=cwd, capture_output=True, text=True)`` under the watchdog.

    Raises
    ------
    ContinuationError
        The run took longer than :func:`time_limit` or wrote more than
        :func:`output_limit` bytes into ``cwd`` (it is killed first).
    """
    if _stopping.is_set():
        raise ContinuationError("AUTO-07p not started: the run is being interrupted")
    folder = Path(cwd)
    limit_s, limit_b = time_limit(), output_limit()
    out_path, err_path = folder / ".bifnet-stdout", folder / ".bifnet-stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        process = subprocess.Popen(args, cwd=str(folder), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                   start_new_session=True, preexec_fn=die_with_parent)
    begin = time.monotonic()
    reason: list[str] = []
    done = threading.Event()

    def watch():  # the limits, checked from a thread while this one waits (no polling delay on exit)
        while not done.wait(0.1):
            elapsed = time.monotonic() - begin
            if _stopping.is_set():
                reason.append("AUTO-07p stopped: the run is being interrupted")
            elif elapsed > limit_s:
                reason.append(f"AUTO-07p stopped after {elapsed:.0f} s: the time limit is {limit_s:g} s"
                              " (BIFNET_AUTO_TIME_LIMIT)")
            else:
                size = _folder_size(folder)
                if size > limit_b:
                    reason.append(f"AUTO-07p stopped: it wrote {size / 2**20:.0f} MB, more than the limit of"
                                  f" {limit_b / 2**20:.0f} MB (BIFNET_AUTO_MAX_OUTPUT_MB); a step size or"
                                  " setting may be invalid")
            if reason:
                _kill_group(process, wait=False)
                return

    watcher = threading.Thread(target=watch, name="bifnet-auto-watchdog", daemon=True)
    with _lock:
        _live.add(process)
    try:
        _tell(f"+pid {process.pid}")
        watcher.start()
        process.wait()
    except BaseException:  # Ctrl-C, SIGTERM (even right after the start): AUTO goes with us
        _kill_group(process)
        raise
    finally:
        with _lock:
            _live.discard(process)
        done.set()
        if watcher.is_alive():
            watcher.join()
        _tell(f"-pid {process.pid}")
    if reason:
        raise ContinuationError(reason[0])
    text_kwargs = kwargs.get("text") or kwargs.get("universal_newlines")

    def read(path):
        data = path.read_bytes() if path.exists() else b""
        with contextlib.suppress(OSError):
            path.unlink()
        return data.decode(errors="replace") if text_kwargs else data

    return subprocess.CompletedProcess(args, process.returncode, read(out_path), read(err_path))


class TrackingTempfile:
    """Stands in for the ``tempfile`` module inside bifpy.auto._process:
    records (and guards) every folder bifpy makes."""

    def __init__(self, real):
        self._real = real
        self._local = threading.local()

    @property
    def made(self) -> list[str]:
        """The folders made by the calling thread (cycle branches run on threads: each call
        cleans up only its own)."""
        made = getattr(self._local, "made", None)
        if made is None:
            made = self._local.made = []
        return made

    def __getattr__(self, name):
        return getattr(self._real, name)

    def mkdtemp(self, *args, **kwargs):
        path = self._real.mkdtemp(*args, **kwargs)
        self.made.append(path)
        guard_folder(path)
        return path


def cleanup(tracker: TrackingTempfile, start: int, keep: str | None = None) -> None:
    """Remove the folders bifpy made since ``start`` (``len(tracker.made)`` before the call), except ``keep``."""
    made = tracker.made[start:]
    del tracker.made[start:]
    for path in made:
        if keep is not None and os.path.abspath(path) == os.path.abspath(keep):
            release_folder(path)
            continue
        shutil.rmtree(path, ignore_errors=True)
        release_folder(path)


class WatchedSubprocess:
    """Stands in for the ``subprocess`` module inside bifpy.auto._process:
    ``gfortran`` goes to the wrapped module, the AUTO executable to
    :func:`run_executable`."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def run(self, args, **kwargs):
        if isinstance(args, list) and args and args[0] != "gfortran" and kwargs.get("cwd"):
            kwargs = dict(kwargs)
            cwd = kwargs.pop("cwd")
            kwargs.pop("capture_output", None)
            return run_executable(args, cwd=cwd, **kwargs)
        return self._inner.run(args, **kwargs)


_installed: dict = {}


def install(process_module) -> TrackingTempfile:
    """Hook the watchdog into ``bifpy.auto._process`` (once); return the folder tracker."""
    if "tracker" not in _installed:
        import tempfile

        tracker = TrackingTempfile(tempfile)
        process_module.tempfile = tracker
        process_module.subprocess = WatchedSubprocess(process_module.subprocess)
        _installed["tracker"] = tracker
    return _installed["tracker"]
