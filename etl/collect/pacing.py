"""Request pacing per credential: a sliding window that every usage-etl process of a host shares.

A vendor's limit is per credential, not per process: a cron `collect` and a `schedule`
daemon (or fourteen `collect` runs in a row) spend the same budget. So each (vendor kind,
credential) pair has a small state file in a pacing folder holding its recent send times,
read and rewritten under `fcntl.flock`. The file is named by a hash of the credential,
never the credential itself.

The folder is $USAGE_ETL_PACING_DIR, else `usage-etl-pacing-<uid>` in the system temp
folder. It spans the processes of one host only; replicas on several hosts are kept apart
by the poll gate (PostgreSQL advisory locks, see docs/deployment.md). When the folder
cannot be used, pacing falls back to the process alone, with one warning.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import logging
import os
import stat
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger("etl.collect.pacing")

Clock = Callable[[], float]

PACING_DIR_ENV = "USAGE_ETL_PACING_DIR"
# Extra seconds added to a vendor's rate window: our clock and the vendor's differ a little.
PACING_MARGIN_SECONDS = 1.0
# A booking further ahead than this is taken for the residue of a wall clock stepped back,
# and dropped, so that such a step cannot stall a credential for longer.
MAX_AHEAD_SECONDS = 3600.0
# The wall clock moved against the monotonic one by more than this since a state file was
# written: it was stepped (NTP, `date -s`), and the file's times move with it.
STEP_TOLERANCE_SECONDS = 1.0
# The state file's first line: the writer's wall minus monotonic clock and the boot it was
# measured in (monotonic times compare only within one boot). Older readers skip it.
HEADER = b"o"
# State files untouched this long hold nothing current; they are removed when a process
# first opens the folder (a rotated credential leaves its old file behind).
STALE_FILE_SECONDS = 86400.0
# Another process holds a file's lock for microseconds; waiting this long means it is stuck.
LOCK_WAIT_SECONDS = 2.0
SUFFIX = ".pace"


@functools.cache
def boot_id() -> str:
    """This boot of the machine (Linux's boot_id), "-" where there is none to read."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or "-"
    except OSError:
        return "-"


def default_pacing_dir() -> Path:
    """$USAGE_ETL_PACING_DIR, else a per-user folder in the system temp folder."""
    env = os.environ.get(PACING_DIR_ENV)
    if env:
        return Path(env)
    return Path(tempfile.gettempdir()) / f"usage-etl-pacing-{os.getuid()}"


def next_slot(times: Sequence[float], now: float, limit: int, period: float) -> float:
    """The earliest send time >= now that keeps at most `limit` sends in any `period`.

    `times` are the booked sends, oldest first. Bookings only ever move forward in time, so
    the one window to check is the one ending at the new send.
    """
    at = max(now, times[-1]) if times else now
    if len(times) >= limit:
        at = max(at, times[-limit] + period)
    return at


class Pacer:
    """A sliding window: at most `limit` sends in any `period` seconds, shared by threads."""

    def __init__(self, limit: int, period: float, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.period = period
        self._clock = clock
        self._sent: deque[float] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def reserve(self, max_wait: float) -> float | None:
        """Book the earliest send slot; return seconds to wait for it, or None if > max_wait."""
        with self._lock:
            return self._reserve_local(self._clock(), max_wait)

    def _reserve_local(self, now: float, max_wait: float) -> float | None:
        at = next_slot(self._sent, now, self.limit, self.period)
        wait = at - now
        if wait > max_wait:
            return None
        self._sent.append(at)
        return wait

    def sent_times(self) -> list[float]:
        """The epoch seconds of the sends booked in the current window (a copy)."""
        with self._lock:
            return list(self._sent)


class SharedPacer(Pacer):
    """A Pacer whose window lives in a file, so that every process of the host shares it.

    The in-memory window is kept as a cache of the file's: it only ever holds bookings the
    file holds too, so when it alone leaves no slot in time the file is not even opened.
    `clock` must be the wall clock (or a fake one shared by all parties): the file's times
    are compared across processes. `elapsed` is the monotonic clock: when the wall clock
    steps (by more than STEP_TOLERANCE_SECONDS against it), the booked times move with it,
    so a clock set back does not hold a credential for the length of the step.
    """

    def __init__(self, limit: int, period: float, path: Path, clock: Clock = time.time,
                 on_error: Callable[[Path, OSError], None] | None = None,
                 elapsed: Clock = time.monotonic) -> None:
        super().__init__(limit, period, clock)
        self.path = path
        self._on_error = on_error
        self._elapsed = elapsed
        self._cache_offset = self._offset()

    def _offset(self) -> float:
        """The wall clock minus the monotonic one: it changes only when the wall clock steps."""
        return self._clock() - self._elapsed()

    def _follow_step(self) -> None:
        """Move the cached bookings by the wall clock's step since they were cached, if any."""
        offset = self._offset()
        step = offset - self._cache_offset
        if abs(step) > STEP_TOLERANCE_SECONDS:
            self._sent = deque((t + step for t in self._sent), maxlen=self.limit)
        self._cache_offset = offset

    def reserve(self, max_wait: float) -> float | None:
        """Book the earliest send slot; return seconds to wait for it, or None if > max_wait.

        The slot is booked in the shared state file too, under its lock; a file that cannot be
        used leaves this process's own window to decide.
        """
        with self._lock:
            self._follow_step()
            now = self._clock()
            if next_slot(self._sent, now, self.limit, self.period) - now > max_wait:
                return None
            try:
                return self._reserve_shared(now, max_wait)
            except OSError as exc:
                if self._on_error is not None:
                    self._on_error(self.path, exc)
                return self._reserve_local(now, max_wait)

    def _reserve_shared(self, now: float, max_wait: float) -> float | None:
        fd = self._open_locked()
        try:
            times = self._read(fd, now)
            at = next_slot(times, now, self.limit, self.period)
            if at - now > max_wait:
                self._sent = deque(times[-self.limit:], maxlen=self.limit)
                return None
            times.append(at)
            kept = times[-self.limit:]
            header = f"{HEADER.decode()} {self._offset():.6f} {boot_id()}\n"
            data = (header + "".join(f"{t:.6f}\n" for t in kept)).encode()
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
            self._sent = deque(kept, maxlen=self.limit)
            return at - now
        finally:
            os.close(fd)  # which drops the lock

    def _open_locked(self) -> int:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise OSError(errno.ETIMEDOUT, "pacing file stays locked") from None
                        time.sleep(0.0005)
                # The stale-file sweep may have unlinked it between our open and our lock.
                if os.fstat(fd).st_nlink > 0:
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def _read(self, fd: int, now: float) -> list[float]:
        raw = os.pread(fd, 64 * 1024, 0)
        read: list[float] = []
        shift = 0.0
        for line in raw.split(b"\n"):
            if line.startswith(HEADER + b" "):
                shift = self._step_since(line)
                continue
            try:
                read.append(float(line))
            except ValueError:
                continue  # an empty or torn line (a process killed mid-write)
        oldest, newest = now - self.period, now + MAX_AHEAD_SECONDS
        times = sorted(t + shift for t in read if oldest < t + shift <= newest)
        self._cache_offset = self._offset()
        return times

    def _step_since(self, header: bytes) -> float:
        """How far the wall clock stepped since the file's writer measured its `header`."""
        try:
            _, offset, boot = header.decode("ascii").split(" ")
            step = self._offset() - float(offset)
        except ValueError:
            return 0.0  # a torn header: the times as they are
        if boot != boot_id() or abs(step) <= STEP_TOLERANCE_SECONDS:
            return 0.0  # another boot's monotonic clock, or no step
        return step


class PacerRegistry:
    """One Pacer per (vendor kind, credential), so sources sharing a credential share a budget.

    With `shared`, the pacers are SharedPacers in `directory` (default: default_pacing_dir(),
    read at each lookup) and their budget is the host's; otherwise it is this registry's.
    `clock` is the wall clock of shared pacers (default) or the monotonic one of the others;
    `elapsed` the monotonic clock shared pacers tell the wall clock's steps by.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        margin: float = PACING_MARGIN_SECONDS,
        *,
        shared: bool = False,
        directory: Path | str | None = None,
        elapsed: Clock | None = None,
    ) -> None:
        self.shared = shared
        self.clock: Clock = clock or (time.time if shared else time.monotonic)
        # The monotonic clock that tells a step of `clock` (SharedPacer); a clock given
        # alone is its own (no steps told).
        self.elapsed: Clock = elapsed or (time.monotonic if clock is None else clock)
        self.margin = margin
        self.directory = Path(directory) if directory is not None else None
        self._pacers: dict[tuple[str, str, str | None], Pacer] = {}
        self._usable: dict[Path, bool] = {}
        self._warned = False
        self._lock = threading.Lock()

    def get(self, kind: str, secret: str, rate: tuple[int, float]) -> Pacer:
        """The pacer of one credential (`secret` of `kind`), `rate` = (requests, seconds).

        Shared through a state file when the registry is shared and its folder usable; one
        per credential and process otherwise.
        """
        # Keyed by a digest, so neither the registry nor a file name holds the credential.
        digest = hashlib.sha256(f"usage-etl-pacing\0{kind}\0{secret}".encode()).hexdigest()
        # The environment is read at every lookup (a dict lookup), so a changed
        # $USAGE_ETL_PACING_DIR takes effect without a new registry.
        where = None if not self.shared else (
            "" if self.directory is not None else os.environ.get(PACING_DIR_ENV, ""))
        key = (kind, digest, where)
        pacer = self._pacers.get(key)
        if pacer is not None:
            return pacer
        with self._lock:
            pacer = self._pacers.get(key)
            if pacer is None:
                folder = (self.directory or default_pacing_dir()) if self.shared else None
                limit, period = rate[0], rate[1] + self.margin
                if folder is not None and self._folder_usable(folder):
                    pacer = SharedPacer(limit, period, folder / f"{kind}-{digest[:40]}{SUFFIX}",
                                        self.clock, self._file_failed, self.elapsed)
                else:
                    pacer = Pacer(limit, period, self.clock)
                self._pacers[key] = pacer
            return pacer

    def _folder_usable(self, folder: Path) -> bool:
        usable = self._usable.get(folder)
        if usable is None:
            try:
                prepare_folder(folder, check_owner=self.directory is None
                               and PACING_DIR_ENV not in os.environ)
                usable = True
            except OSError as exc:
                self._file_failed(folder, exc)
                usable = False
            self._usable[folder] = usable
        return usable

    def _file_failed(self, path: Path, exc: OSError) -> None:
        # Once per registry: a folder that fails fails for every credential.
        if not self._warned:
            self._warned = True
            log.warning("pacing folder unusable (%s: %s): each process paces on its own; "
                        "set $%s to a writable folder", path, exc.strerror or exc,
                        PACING_DIR_ENV)


def prepare_folder(folder: Path, *, check_owner: bool) -> None:
    """Create the pacing folder (mode 0700) and sweep state files unused for a day.

    In the shared temp folder anyone may have created the path first: `check_owner` refuses
    a folder that is a symlink or is not ours (OSError), rather than pace through it.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(folder)
    if check_owner and (not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid()):
        raise OSError(errno.EPERM, "not a folder owned by this user", str(folder))
    cutoff = time.time() - STALE_FILE_SECONDS
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.endswith(SUFFIX) and entry.stat().st_mtime < cutoff:
                _remove_stale(Path(entry.path), cutoff)


def _remove_stale(path: Path, cutoff: float) -> None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return
    try:
        # Under the lock, so that nobody is mid-booking; users re-open a file found unlinked.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_mtime < cutoff:
            path.unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        os.close(fd)


# The process-wide registry, shared with the host's other usage-etl processes through the
# pacing folder: every Collector uses it unless given another.
PACERS = PacerRegistry(shared=True)
