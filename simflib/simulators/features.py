"""What a featurized simulator knows about an example before any run is fitted: :class:`ExampleFeatures`.

Simfluence learns a free parameter per (training, test) pair and therefore knows nothing about an example it has
not seen in a fitted run. A featurized simulator instead maps *features* of the two examples to their influence,
so it can be asked about a new test example (or training example) by computing its features. Two kinds are held
here, each for every pool example and every recorded test example, with their ids:

* **gradient products** ``P[i, j]``: the inner product of the two examples' loss gradients at the model before
  fine-tuning, the gradient of the pool example preconditioned as AdamW's first steps would (divided by the square
  root of the pool's mean squared gradient). Up to the learning rate and batch size this is TracIn's prediction of
  how much one step on z_i lowers the loss of z_j at the start of training. They come from the model, so they cost
  one gradient per example and no training run (:func:`simflib.features.compute_features`).
* **text embeddings**: a frozen sentence encoder's vector of each example's text, GPTfluence's features
  (Chai et al. 2024).

The file format is a checked :mod:`simflib.storage` archive; loading checks its header, shapes and values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from simflib.storage import read_archive, write_archive

FEATURES_FORMAT = "simflib.example_features"


@dataclass(frozen=True, eq=False)
class ExampleFeatures:
    """Features of a setting's pool and test examples, addressed by example id.

    Attributes:
        pool_ids: (n,) ids of the pool examples, in pool order (curriculum index i is ``pool_ids[i]``).
        test_ids: (m,) ids of the test examples the features cover.
        gradient_products: (n, m) preconditioned gradient products at the initial model, or None.
        pool_text: (n, d) text embeddings of the pool examples, or None.
        test_text: (m, d) text embeddings of the test examples, or None.
        meta: JSON provenance (the run folder's fingerprint, encoder, preconditioner, command).
    """

    pool_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    gradient_products: NDArray[np.float64] | None = None
    pool_text: NDArray[np.float64] | None = None
    test_text: NDArray[np.float64] | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, m = len(self.pool_ids), len(self.test_ids)
        if n == 0 or m == 0:
            raise ValueError("ExampleFeatures: no pool or no test examples")
        for name, ids in (("pool_ids", self.pool_ids), ("test_ids", self.test_ids)):
            if len(set(ids)) != len(ids):
                raise ValueError(f"ExampleFeatures: {name} repeats an id")
        expected = {"gradient_products": (n, m), "pool_text": (n, None), "test_text": (m, None)}
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is None:
                continue
            arr = np.asarray(value, dtype=np.float64)
            if arr.ndim != 2 or arr.shape[0] != shape[0] or (shape[1] is not None and arr.shape[1] != shape[1]):
                raise ValueError(f"ExampleFeatures: {name} has shape {arr.shape}, want {shape} (None: any)")
            if not np.isfinite(arr).all():
                raise ValueError(f"ExampleFeatures: {name} holds non-finite values")
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)
        if (self.pool_text is None) != (self.test_text is None):
            raise ValueError("ExampleFeatures: text embeddings need both pool_text and test_text")
        if (
            self.pool_text is not None
            and self.test_text is not None
            and self.pool_text.shape[1] != self.test_text.shape[1]
        ):
            raise ValueError(
                f"ExampleFeatures: pool_text has dimension {self.pool_text.shape[1]}, test_text {self.test_text.shape[1]}"
            )

    @property
    def n_train(self) -> int:
        """Pool size n."""
        return len(self.pool_ids)

    def columns(self, test_ids: Sequence[Any]) -> NDArray[np.int64]:
        """Positions of ``test_ids`` among :attr:`test_ids`.

        Raises:
            ValueError: Naming the first id the features do not cover.
        """
        where = {key: k for k, key in enumerate(self.test_ids)}
        missing = [t for t in test_ids if t not in where]
        if missing:
            raise ValueError(
                f"ExampleFeatures: no features for test example {missing[0]!r} ({len(missing)} missing); compute "
                f"them for the test examples you simulate"
            )
        return np.array([where[t] for t in test_ids], dtype=np.int64)

    def products(self, test_ids: Sequence[Any]) -> NDArray[np.float64]:
        """(n, k) gradient products with the given test examples."""
        if self.gradient_products is None:
            raise ValueError("ExampleFeatures: these features hold no gradient products")
        return self.gradient_products[:, self.columns(test_ids)]

    def text(self, test_ids: Sequence[Any]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(n, d) pool and (k, d) test text embeddings for the given test examples."""
        if self.pool_text is None or self.test_text is None:
            raise ValueError("ExampleFeatures: these features hold no text embeddings")
        return self.pool_text, self.test_text[self.columns(test_ids)]

    def check_pool(self, n_train: int, pool_ids: Sequence[Any] | None = None) -> None:
        """Raise unless these features describe a pool of ``n_train`` examples (with these ids, when given)."""
        if n_train != self.n_train:
            raise ValueError(f"ExampleFeatures: features cover a pool of {self.n_train}, the runs one of {n_train}")
        if pool_ids is not None and tuple(pool_ids) != self.pool_ids:
            raise ValueError("ExampleFeatures: the features' pool ids differ from the runs' (another setting?)")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically as a checked archive."""
        arrays = {
            name: np.asarray(value)
            for name in ("gradient_products", "pool_text", "test_text")
            if (value := getattr(self, name)) is not None
        }
        header = {
            "format": FEATURES_FORMAT,
            "version": 1,
            "pool_ids": list(self.pool_ids),
            "test_ids": list(self.test_ids),
            "arrays": sorted(arrays),
            "meta": dict(self.meta),
        }
        return write_archive(path, arrays, header)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ExampleFeatures:
        """Read a file written by :meth:`save`.

        Raises:
            ValueError: Naming the file, if it is damaged or edited, lacks an array its header lists, or holds
                arrays of the wrong shape or non-finite values.
        """
        header, arrays = read_archive(path, fmt=FEATURES_FORMAT, versions=(1,))
        for key in ("pool_ids", "test_ids", "arrays"):
            if not isinstance(header.get(key), list):
                raise ValueError(f"{path}: header field {key!r} missing or not a list")
        missing = [a for a in header["arrays"] if a not in arrays]
        if missing:
            raise ValueError(f"{path}: the header lists arrays {missing} the file does not hold")
        try:
            return cls(
                pool_ids=tuple(header["pool_ids"]),
                test_ids=tuple(header["test_ids"]),
                meta=dict(header.get("meta") or {}),
                **{k: arrays[k] for k in header["arrays"]},
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from None
