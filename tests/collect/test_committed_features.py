"""The committed example features under data/features/ belong to their run folders and regenerate from the code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simflib.collect import DEFAULT_SETTINGS

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.mark.parametrize("name", sorted(DEFAULT_SETTINGS))
def test_committed_features_cover_their_settings_examples(name):
    from simflib.features import features_path, load_features

    folder = DATA / "runs" / name
    assert features_path(folder).is_file(), f"no committed features for {name}: python -m simflib features {folder}"
    config = json.loads((folder / "config.json").read_text())
    feats = load_features(folder)  # checks the checksum and the folder's fingerprint
    assert list(feats.pool_ids) == config["pool_ids"] and list(feats.test_ids) == config["test_ids"]
    assert feats.gradient_products is not None and feats.pool_text is not None
    assert feats.meta["command"] == f"python -m simflib features data/runs/{name}" or feats.meta["command"].startswith(
        f"python -m simflib features data/runs/{name} "
    )


@pytest.mark.slow
def test_committed_features_regenerate_for_a_prefix_of_test_examples():
    torch = pytest.importorskip("torch")
    from simflib.collect import Setting
    from simflib.features import load_features, preconditioned_products, text_embeddings, text_of

    folder = DATA / "runs" / "boolq-minilm-ia3"
    feats = load_features(folder)
    setting = Setting(DEFAULT_SETTINGS["boolq-minilm-ia3"])
    k = 4
    got = preconditioned_products(setting.model, setting.train_data, setting.test_data.subset(torch.arange(k)))
    # A solve against the preconditioner amplifies rounding: two CPU machines gave products differing by up to
    # 3.3e-7 of the largest one.
    np.testing.assert_allclose(got, feats.gradient_products[:, :k], rtol=1e-5, atol=1e-6 * np.abs(got).max())
    text = text_embeddings([text_of(e) for e in setting.pool[:k]])
    np.testing.assert_allclose(text, feats.pool_text[:k], rtol=1e-5, atol=1e-6)
