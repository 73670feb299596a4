"""Storage: the checked, pickle-free archive every simflib data file uses, atomic writes, and run folders.

An *archive* is a NumPy ``.npz`` (a zip of ``.npy`` members) with one extra member, ``header``: UTF-8 JSON as
uint8, holding at least ``format``, ``version`` and ``sha256``. Reading one never unpickles and checks, in order:

1. the zip directory: every member's declared uncompressed size is bounded (at most :data:`MAX_RATIO` times its
   compressed size, plus :data:`SLACK` bytes), so a crafted file cannot expand into memory it never declared;
2. each member's ``.npy`` header (read from the first bytes only): a plain numeric dtype, and a shape whose size
   agrees with the declared uncompressed size, before its data is decompressed;
3. the JSON header: format name and a supported version;
4. the checksum: ``sha256`` over every array (name, dtype, shape, bytes) and, from the versions that say so
   (``"covers": "header"``), over the header's other fields too, so a hand-edited header is detected.

Any failure (truncation, bit flips that break the zip or the compression, tampering) raises :class:`ValueError`
naming the file. Writes go to a temporary file in the destination folder, are flushed to disk, then renamed over
the target, so an interrupted write never leaves a partial file.

Run folders hold one archive per run, named ``run-00000.npz``; :func:`run_files` lists them by run index and
refuses names that do not follow the pattern.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MAX_RATIO",
    "SLACK",
    "UNFINGERPRINTED",
    "atomic_write",
    "checkpoint_file_name",
    "digest",
    "fingerprint",
    "read_archive",
    "run_file_name",
    "run_files",
    "write_archive",
]

MAX_RATIO = 200
"""Largest accepted ratio of a member's uncompressed to compressed size (real data compresses far less)."""
SLACK = 1 << 20
"""Bytes a member may hold beyond ``MAX_RATIO`` times its compressed size (small arrays compress badly)."""

_RUN_FILE = re.compile(r"run-(\d{5,})\.npz")

UNFINGERPRINTED = ("n_runs", "checkpoints", "device")
"""Configuration fields that do not change what a run trains on or how: how many runs, what is saved, and where it
is trained (CPU and GPU trajectories of one run differ only by float rounding; each run records its device)."""
ADDED_FIELDS = {"n_extra": 0, "max_new_tokens": 32}
"""Configuration fields added after runs were committed, with their defaults: hashed only when they differ from the
default, so the fingerprints of every configuration that does not use them stay what they were."""


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, and rename it over ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; saved data is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def digest(arrays: Mapping[str, NDArray[Any]], header: Mapping[str, Any] | None = None) -> str:
    """sha256 over the arrays (name, dtype, shape, bytes, in name order) and, if given, the header's fields.

    Args:
        arrays: The archive's arrays, without ``header``.
        header: Header fields to cover (``sha256`` itself is left out), as canonical JSON.
    """
    h = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    if header is not None:
        fields = {k: v for k, v in header.items() if k != "sha256"}
        h.update(b"header|" + json.dumps(fields, sort_keys=True, allow_nan=False).encode())
    return h.hexdigest()


def write_archive(
    path: str | os.PathLike[str],
    arrays: Mapping[str, NDArray[Any]],
    header: Mapping[str, Any],
    *,
    compress: bool = True,
) -> Path:
    """Write ``arrays`` and ``header`` atomically; the checksum covers both (``"covers": "header"`` is added).

    Args:
        path: Destination ``.npz``.
        arrays: Plain numeric arrays (no ``header`` key).
        header: JSON-serialisable fields, with ``format`` and ``version``.
        compress: Deflate the members.
    """
    if "header" in arrays:
        raise ValueError("write_archive: 'header' is reserved for the JSON header")
    for name, arr in arrays.items():
        if np.asarray(arr).dtype.kind not in "biuf":
            raise ValueError(
                f"write_archive: array {name!r} has dtype {np.asarray(arr).dtype}; only numbers are stored"
            )
    full = {**header, "covers": "header"}
    full["sha256"] = digest(arrays, full)
    payload = {**arrays, "header": np.frombuffer(json.dumps(full, allow_nan=False).encode(), dtype=np.uint8)}
    saver: Callable[..., None] = np.savez_compressed if compress else np.savez
    path = Path(path)
    atomic_write(path, lambda f: saver(f, **payload))
    return path


def read_archive(
    path: str | os.PathLike[str], *, fmt: str, versions: Collection[int]
) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    """Read and check an archive written by :func:`write_archive` (or an older version of a format).

    Args:
        path: The file.
        fmt: The expected ``format`` of its header.
        versions: Supported versions.

    Returns:
        The header and the arrays (without ``header``).

    Raises:
        ValueError: Naming the file, on anything that is not an intact archive of this format.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise ValueError(f"{path}: truncated or not a simflib file (not an .npz archive)")
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as archive:
                arrays = {}
                for info in archive.infolist():
                    name = info.filename.removesuffix(".npy")
                    _check_declared_size(info, path)
                    with archive.open(info) as member:
                        arrays[name] = _read_member(member, info, path)
        except ValueError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError) as err:
            raise ValueError(f"{path}: damaged or truncated file ({type(err).__name__}: {err})") from None
    header = _read_header(arrays.pop("header", None), path, fmt, versions)
    covered = header if header.get("covers") == "header" else None
    if header["sha256"] != digest(arrays, covered):
        raise ValueError(f"{path}: contents do not match the recorded sha256: the file was modified or damaged")
    return header, arrays


def _check_declared_size(info: zipfile.ZipInfo, path: Path) -> None:
    if info.file_size > MAX_RATIO * info.compress_size + SLACK:
        raise ValueError(
            f"{path}: member {info.filename!r} declares {info.file_size} bytes from {info.compress_size} compressed; "
            f"refusing to decompress (more than {MAX_RATIO} times plus {SLACK} bytes)"
        )


def _read_member(member: IO[bytes], info: zipfile.ZipInfo, path: Path) -> NDArray[Any]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(member)
        shape, fortran, dtype = (
            fmt.read_array_header_1_0(member) if version == (1, 0) else fmt.read_array_header_2_0(member)
        )
    except ValueError as err:
        raise ValueError(f"{path}: member {info.filename!r} is not a plain .npy array ({err})") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise ValueError(f"{path}: member {info.filename!r} has dtype {dtype}; refusing anything but numbers")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count < 0 or count * dtype.itemsize > info.file_size:
        raise ValueError(
            f"{path}: member {info.filename!r} declares shape {shape} ({count * dtype.itemsize} bytes) but holds "
            f"{info.file_size} bytes"
        )
    data = member.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise ValueError(f"{path}: member {info.filename!r} is truncated")
    arr = np.frombuffer(data, dtype=dtype)
    return arr.reshape(shape, order="F" if fortran else "C").copy()


def _read_header(raw: NDArray[Any] | None, path: Path, fmt: str, versions: Collection[int]) -> dict[str, Any]:
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{path}: not a simflib file (no header)")
    try:
        header = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable header ({err})") from None
    if not isinstance(header, dict) or header.get("format") != fmt:
        found = header.get("format") if isinstance(header, dict) else None
        raise ValueError(f"{path}: not a {fmt} file (format {found!r})")
    if header.get("version") not in versions:
        raise ValueError(f"{path}: {fmt} version {header.get('version')!r}; this simflib reads {sorted(versions)}")
    if not isinstance(header.get("sha256"), str):
        raise ValueError(f"{path}: header field 'sha256' missing or not a str")
    return header


def run_file_name(run_index: int) -> str:
    """The file name of run ``run_index`` in a run folder (``run-00007.npz``)."""
    if isinstance(run_index, bool) or not isinstance(run_index, (int, np.integer)) or run_index < 0:
        raise ValueError(f"run index must be a non-negative integer, got {run_index!r}")
    return f"run-{int(run_index):05d}.npz"


def run_files(folder: str | os.PathLike[str]) -> dict[int, Path]:
    """The run files of a folder by run index, in index order.

    Raises:
        ValueError: On a file that starts like a run file but does not follow the pattern exactly (a copy named
            ``run-00001 (1).npz``, or ``run-000001.npz``), since it would otherwise load as a run.
    """
    found: dict[int, Path] = {}
    for file in Path(folder).glob("run-*.npz"):
        match = _RUN_FILE.fullmatch(file.name)
        if match is None or run_file_name(int(match.group(1))) != file.name:
            raise ValueError(f"{file}: not a run file name (expected run-NNNNN.npz); move it out of the run folder")
        found[int(match.group(1))] = file
    return dict(sorted(found.items()))


def checkpoint_file_name(run_index: int) -> str:
    """The file name of run ``run_index``'s saved checkpoints (``run-00007.ckpt.safetensors``)."""
    return run_file_name(run_index).replace(".npz", ".ckpt.safetensors")


def fingerprint(config: Mapping[str, Any]) -> str:
    """Hash of the configuration fields that shape a run's trajectory (all but :data:`UNFINGERPRINTED`).

    A run folder's ``config.json`` records it beside the configuration, and every run file carries it, so a
    configuration edited by hand no longer matches its fingerprint.
    """
    fields = {
        k: v for k, v in config.items() if k not in UNFINGERPRINTED and not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
