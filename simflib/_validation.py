"""Input checks shared by the data model, the solvers and the metrics.

Every check raises :class:`ValueError` whose message names *where* the problem is (a run, a step,
a field), so that a user holding thirty runs can find the one bad number.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

PAD = -1
"""Index that pads a short batch in a curriculum."""


def as_curriculum(curriculum: ArrayLike, *, n_train: int | None = None, where: str = "curriculum") -> NDArray[np.int64]:
    """Return ``curriculum`` as an int64 array of shape (..., T, b), checking its entries.

    Args:
        curriculum: Integer array, last two axes (T, b): row ``t - 1`` holds the batch of step ``t``.
        n_train: Size of the training pool; indices must lie in ``[0, n_train)`` or be ``-1``.
        where: Name of the thing checked, used in error messages (e.g. ``"run 3: curriculum"``).

    Raises:
        ValueError: On non-integer entries, fewer than two axes, or out-of-range indices.
    """
    arr = np.asarray(curriculum)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{where}: expected integer training-example indices, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and (not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr))):
        bad = np.argwhere(~np.isfinite(arr) | (arr != np.round(arr)))[0]
        raise ValueError(f"{where}: entries must be integers; {_locate(bad)} holds {arr[tuple(bad)]!r}")
    if arr.ndim < 2:
        raise ValueError(f"{where}: expected shape (T, b) (steps, batch size), got shape {arr.shape}")
    allowed = "" if n_train is None else f" and < n_train={n_train}"
    if arr.size and arr.dtype.kind in "uf":  # values int64 cannot hold would wrap around (2**64 - 1 -> -1)
        largest = np.iinfo(np.int64).max // 2
        huge = (arr > largest) | (arr < -largest) if arr.dtype.kind == "f" else arr > largest
        if huge.any():
            bad = np.argwhere(huge)[0]
            raise ValueError(
                f"{where}: index {arr[tuple(bad)].item()!r} at {_locate(bad)} is out of range "
                f"(indices must be >= 0{allowed}, or -1 for padding)"
            )
    arr = arr.astype(np.int64, copy=False)
    low = arr < PAD
    high = np.zeros_like(low) if n_train is None else arr >= n_train
    if low.any() or high.any():
        bad = np.argwhere(low | high)[0]
        raise ValueError(
            f"{where}: index {arr[tuple(bad)]} at {_locate(bad)} is out of range "
            f"(indices must be >= 0{allowed}, or -1 for padding)"
        )
    return arr


def as_losses(losses: ArrayLike, *, where: str = "losses") -> NDArray[np.float64]:
    """Return ``losses`` as a finite float64 array, naming the first non-finite entry if any.

    Args:
        losses: Array whose last two axes are (steps, test examples).
        where: Name used in error messages.

    Raises:
        ValueError: On non-numeric data, fewer than two axes, NaN or infinite values.
    """
    arr = np.asarray(losses)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{where}: expected a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim < 2:
        raise ValueError(f"{where}: expected shape (T + 1, m) (steps, test examples), got shape {arr.shape}")
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise ValueError(f"{where}: non-finite value {arr[tuple(bad)]} at {_locate(bad, loss=True)}")
    return arr


def _locate(index: NDArray[np.int64], *, loss: bool = False) -> str:
    """Describe a position in a (..., T, b) curriculum or (..., T + 1, m) loss array."""
    *lead, row, col = (int(i) for i in index)
    prefix = "".join(f"[{i}]" for i in lead)
    prefix = f"curriculum {prefix}, " if lead else ""
    if loss:
        return f"{prefix}step {row}, test example {col}"
    return f"{prefix}step {row + 1} (row {row}), batch position {col}"


def pad_batches(batches: NDArray[np.int64], b: int) -> NDArray[np.int64]:
    """Widen (..., b0) batches to (..., b) with -1 padding (b >= b0)."""
    if batches.shape[-1] == b:
        return batches
    pad = np.full(batches.shape[:-1] + (b - batches.shape[-1],), PAD, dtype=np.int64)
    return np.concatenate([batches, pad], axis=-1)
