"""The README's quickstart runs as written."""

from __future__ import annotations

import re

from simflib import book


def test_readme_quickstart_runs(tmp_path, monkeypatch, capsys):
    text = (book.ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "the README has no python example"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "Simfluence-Linear" in out and "±" in out
