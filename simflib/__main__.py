"""Command line: ``python -m simflib collect ...`` records runs, ``python -m simflib tracin-cp FOLDER`` computes
TracIn-CP's hypothetical sums over them; ``python -m simflib.book ...`` runs the book."""

from __future__ import annotations

import sys


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("collect", "tracin-cp"):
        print("usage: python -m simflib {collect,tracin-cp} ...  (see --help of each)", file=sys.stderr)
        return 2
    if sys.argv[1] == "tracin-cp":
        from simflib.tracin import main as tracin_main

        return tracin_main(sys.argv[2:])
    from simflib.collect import main as collect_main

    return collect_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
