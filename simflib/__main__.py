"""Command line: ``python -m simflib collect ...`` records runs; ``python -m simflib.book ...`` runs the book."""

from __future__ import annotations

import sys


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("collect",):
        print("usage: python -m simflib collect --task TASK --out FOLDER [options]  (see --help)", file=sys.stderr)
        return 2
    from simflib.collect import main as collect_main

    return collect_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
