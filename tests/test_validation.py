"""Input checks: curriculum indices of any dtype are refused when out of range, never wrapped."""

from __future__ import annotations

import re

import numpy as np
import pytest

from simflib._validation import as_curriculum


@pytest.mark.parametrize(
    ("value", "dtype", "shown"),
    [
        (2**64 - 1, np.uint64, "18446744073709551615"),  # wrapped to -1 (padding) before
        (2**63, np.uint64, "9223372036854775808"),
        (1e20, np.float64, "1e+20"),
        (-1e20, np.float64, "-1e+20"),
        (2**40, np.int64, "1099511627776"),
    ],
)
def test_out_of_range_indices_are_named_with_their_own_value(value, dtype, shown):
    """Finding: a uint64 index of 2**64 - 1 wrapped to -1 and passed; a float 1e20 gave a misleading message."""
    curriculum = np.zeros((3, 2), dtype=dtype)
    curriculum[1, 1] = value
    with pytest.raises(ValueError, match=rf"index {re.escape(shown)} at step 2 \(row 1\), batch position 1 is out of range"):
        as_curriculum(curriculum, n_train=10)


def test_in_range_values_of_other_dtypes_are_accepted():
    for dtype in (np.uint8, np.uint64, np.int32, np.float32):
        np.testing.assert_array_equal(as_curriculum(np.array([[0, 9]], dtype=dtype), n_train=10), [[0, 9]])
    np.testing.assert_array_equal(as_curriculum(np.array([[-1.0, 3.0]]), n_train=10), [[-1, 3]])
