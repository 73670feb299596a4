"""Command line: ``python -m simflib collect ...`` records runs, ``python -m simflib tracin-cp FOLDER`` computes
TracIn-CP's hypothetical sums over them, ``python -m simflib features FOLDER`` the example features of featurized
simulators; ``python -m simflib.book ...`` runs the book."""

from __future__ import annotations

import sys


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("collect", "tracin-cp", "features"):
        print("usage: python -m simflib {collect,tracin-cp,features} ...  (see --help of each)", file=sys.stderr)
        return 2
    if sys.argv[1] == "tracin-cp":
        from simflib.tracin import main as command
    elif sys.argv[1] == "features":
        from simflib.features import main as command
    else:
        from simflib.collect import main as command
    try:
        return command(sys.argv[2:])
    except (ValueError, FileNotFoundError) as err:  # bad input: the message names what is wrong; no traceback
        print(f"python -m simflib {sys.argv[1]}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
