"""One writer per output: a lock file held while a command writes a run folder or an artefact.

``OutputLock(path, command)`` creates ``path`` with ``O_EXCL`` and writes who holds it (pid, the
process's start time from ``/proc/<pid>/stat``, host name, boot id, command, and the files the
run claims). A second command that finds the lock held by a live process fails at once with a
``LockError`` naming the lock file. A lock left behind is stale when its process is gone: a dead
pid, a pid now used by another process (its start time differs), or another boot of this host;
the stale lock is replaced, and the files its run claimed are kept in an ``.unfinished`` journal
beside it (``unfinished_files``) so the next run can name or remove them (``predict
--overwrite``). A lock of another host is never broken (its process cannot be checked).

Where each command locks: ``folder_lock`` (``<folder>/.maskconver-<command>.lock``: ``train``,
``predict``, ``evaluate --save-predictions``, ``data`` outputs) and ``file_lock``
(``<dir>/.<name>.maskconver.lock``: ``export``'s artefact, a metrics JSON).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from maskconver.errors import MaskconverError
from maskconver.files import process_alive, write_text_atomic

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
JOURNAL_SUFFIX = ".unfinished"
# /proc/<pid>/stat: after the ``(comm)`` field, ``starttime`` is field 22, i.e. index 19
_START_TIME_INDEX = 19


class LockError(MaskconverError):
    """Another live process holds the lock of an output (the message names the lock file)."""


@dataclass(frozen=True)
class LockOwner:
    """Who holds a lock: enough to tell a live holder from a stale file."""

    pid: int
    started: str | None = None  # the process's start time (clock ticks since boot)
    host: str | None = None
    boot: str | None = None
    command: str = ""
    claims: tuple[str, ...] = ()  # file names (relative to the lock's folder) the run writes


def process_start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (``/proc/<pid>/stat``), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[_START_TIME_INDEX] if len(fields) > _START_TIME_INDEX else None


def boot_id() -> str | None:
    """This boot's id (Linux), None elsewhere."""
    try:
        return BOOT_ID_FILE.read_text().strip() or None
    except OSError:
        return None


def current_owner(command: str, claims: Iterable[str] = ()) -> LockOwner:
    """The ``LockOwner`` record of this process."""
    pid = os.getpid()
    return LockOwner(
        pid=pid,
        started=process_start_time(pid),
        host=socket.gethostname(),
        boot=boot_id(),
        command=command,
        claims=tuple(claims),
    )


def read_owner(path: Path) -> LockOwner | None:
    """The owner written in lock file ``path`` (a bare pid: older locks), None if unreadable."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text.isdigit():
        return LockOwner(pid=int(text))
    try:
        data = json.loads(text)
        return LockOwner(
            pid=int(data["pid"]),
            started=None if data.get("started") is None else str(data["started"]),
            host=data.get("host"),
            boot=data.get("boot"),
            command=str(data.get("command", "")),
            claims=tuple(str(c) for c in data.get("claims", ())),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def owner_alive(owner: LockOwner) -> bool:
    """Whether the lock's process may still run (another host's process counts as alive)."""
    if owner.host is not None and owner.host != socket.gethostname():
        return True
    if owner.boot is not None and boot_id() not in (None, owner.boot):
        return False  # written before this host last booted
    if not process_alive(owner.pid):
        return False
    if owner.started is not None:
        started = process_start_time(owner.pid)
        if started is not None and started != owner.started:
            return False  # the pid now belongs to another process
    return True


def _holder(owner: LockOwner, command: str) -> str:
    command = f"maskconver {owner.command or command}".rstrip()
    where = f" on {owner.host}" if owner.host and owner.host != socket.gethostname() else ""
    return f"another {command} (pid {owner.pid}{where})"


class OutputLock:
    """Hold lock file ``path`` (``O_EXCL``) for a ``with`` block; see the module docstring.

    Args:
        path: the lock file (``folder_lock`` / ``file_lock`` name it).
        command: the subcommand that writes (``"train"``), named in the refusal.
        claims: the files the run will write, relative to the lock's folder (a killed run's
            claims become ``unfinished_files``).
    """

    def __init__(self, path: Path, command: str, claims: Iterable[str] = ()) -> None:
        self.path = Path(path)
        self.command = command
        self.claims = tuple(claims)
        self._made_folder = False

    def __enter__(self) -> OutputLock:
        folder = self.path.parent
        if not folder.exists():
            folder.mkdir(parents=True, exist_ok=True)
            self._made_folder = True
        record = json.dumps(asdict(current_owner(self.command, self.claims)))
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = read_owner(self.path)
                if owner is not None and owner_alive(owner):
                    holder = _holder(owner, self.command)
                    raise LockError(
                        f"{holder} is writing {self._target()} (lock file {self.path}); wait "
                        "for it to finish or choose another output"
                    ) from None
                self._break_stale(owner)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(record)
            return self
        raise LockError(f"cannot lock {self._target()}: remove the lock file {self.path}")

    def _target(self) -> str:
        return str(self.path.parent)

    def _break_stale(self, owner: LockOwner | None) -> None:
        """Replace a stale lock; its run's claims go to the journal (``unfinished_files``)."""
        if owner is not None and owner.claims:
            journal = journal_path(self.path)
            names = sorted(set(_journal_names(journal)) | set(owner.claims))
            write_text_atomic(journal, "".join(f"{name}\n" for name in names))
        self.path.unlink(missing_ok=True)

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.path.unlink(missing_ok=True)
        if exc_type is None:  # this run finished: an earlier killed run's leftovers are settled
            journal_path(self.path).unlink(missing_ok=True)
        if self._made_folder:  # a refused run leaves no empty folder behind
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()


def journal_path(lock: Path) -> Path:
    """The journal of the files that killed holders of ``lock`` claimed."""
    return lock.with_name(lock.name + JOURNAL_SUFFIX)


def _journal_names(journal: Path) -> list[str]:
    try:
        return [line for line in journal.read_text(encoding="utf-8").splitlines() if line]
    except (OSError, UnicodeDecodeError):
        return []


def unfinished_files(lock: Path) -> set[Path]:
    """Files claimed by runs that held ``lock`` and did not finish (killed), in its folder.

    The claims of a stale lock still in place count, as do those of the journal that replacing
    stale locks fills.
    """
    names = set(_journal_names(journal_path(lock)))
    owner = read_owner(lock)
    if owner is not None and not owner_alive(owner):
        names |= set(owner.claims)
    folder = lock.parent
    return {folder / name for name in names if (folder / name).parent == folder}


def folder_lock(folder: Path, command: str, claims: Iterable[str] = ()) -> OutputLock:
    """The lock of run folder ``folder``: ``<folder>/.maskconver-<command>.lock``."""
    return OutputLock(Path(folder) / f".maskconver-{command}.lock", command, claims)


def file_lock(path: Path, command: str) -> OutputLock:
    """The lock of artefact ``path``: ``<dir>/.<name>.maskconver.lock`` beside it."""
    path = Path(path)
    return _FileLock(path.with_name(f".{path.name}.maskconver.lock"), command, path)


class _FileLock(OutputLock):
    """An ``OutputLock`` whose refusal names the artefact rather than its folder."""

    def __init__(self, path: Path, command: str, artefact: Path) -> None:
        super().__init__(path, command)
        self.artefact = artefact

    def _target(self) -> str:
        return str(self.artefact)
