"""Compare the glued values of two sets of executed chapters (e.g. a build before and after a refactor).

    python tools/compare_glue.py OLD_DIR NEW_DIR [chapter ...]

Prints every glue name whose value differs, and those present on one side only; exits 1 if any value differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def glued(path: Path) -> dict[str, str]:
    values = {}
    for cell in nbformat.read(path, as_version=4).cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                data = output.get("data", {})
                values[name] = data.get("application/papermill.record/text/plain", data.get("text/plain", ""))
    return values


def main(argv: list[str]) -> int:
    old_dir, new_dir, *names = (Path(a) if k < 2 else a for k, a in enumerate(argv))
    names = names or sorted(p.stem for p in Path(old_dir).glob("*.ipynb"))
    differ = 0
    for name in names:
        old, new = glued(Path(old_dir) / f"{name}.ipynb"), glued(Path(new_dir) / f"{name}.ipynb")
        same = [k for k in old if k in new and old[k] == new[k]]
        changed = [k for k in old if k in new and old[k] != new[k]]
        print(f"{name}: {len(same)} equal, {len(changed)} differ, {len(set(old) - set(new))} only before, "
              f"{len(set(new) - set(old))} only after")
        for k in changed:
            print(f"  {k}: {old[k]} -> {new[k]}")
        for k in sorted(set(old) - set(new)):
            print(f"  only before: {k} = {old[k]}")
        differ += len(changed)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
