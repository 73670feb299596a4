"""The README's quickstart runs as written, and what it prints is what a direct computation gives."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.stats import spearmanr

from simflib import book


def test_readme_quickstart_prints_numbers_a_direct_computation_confirms(tmp_path, monkeypatch, capsys):
    text = (book.ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "the README has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    sim, blind, held_out = namespace["sim"], namespace["blind"], namespace["held_out"]
    totals: dict[str, float] = {}
    for model, label in ((blind, "Curriculum-blind"), (sim, "Simfluence-Linear")):
        mses, rhos, finals = [], [], []
        for run in held_out:
            pred = model.simulate(run.curriculum, run.initial_loss)
            mses.append(np.mean((pred[1:] - run.losses[1:]) ** 2))
            rhos.append(spearmanr(pred[-1], run.losses[-1]).statistic)
            finals.append(pred[-1])
        line = next(row for row in out.splitlines() if row.startswith(label))
        mse, _, mse_sd, rho, _, _, lds, improvement = line[len(label) :].split()
        assert float(mse) == pytest.approx(np.mean(mses), rel=5e-3)
        assert float(mse_sd) == pytest.approx(np.std(mses, ddof=1), rel=5e-3)
        assert float(rho) == pytest.approx(np.mean(rhos), rel=5e-3)
        totals[label] = np.mean(mses)
        if model is sim:  # the LDS: per test example, Spearman across the held-out runs of the final losses
            observed = np.array([r.losses[-1] for r in held_out])
            direct = np.mean([spearmanr(np.array(finals)[:, j], observed[:, j]).statistic for j in range(observed.shape[1])])
            assert float(lds) == pytest.approx(direct, abs=1e-9)
            assert float(improvement) == pytest.approx(1 - totals[label] / totals["Curriculum-blind"], rel=1e-4)
        else:
            assert lds == "NaN" and float(improvement) == 0.0  # the baseline ranks no runs
