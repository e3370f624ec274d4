"""The installed packages against the tested set pinned in constraints.txt, which `make` installs.

    python scripts/compare_versions.py constraints.txt          # what this environment runs newer or older than pinned
    python scripts/compare_versions.py constraints.txt --write  # pin this environment's versions (`make lock`)

`make test-latest` prints the comparison before it runs the tests against the newest versions, so a failure there
names the upstream releases it came with. Pin them with `make lock` only after `make test-full` passes with them.
"""

import argparse
import importlib.metadata
import re
import sys
from pathlib import Path


# Installed by venv / pip themselves, or this project (editable): not part of the tested set.
NOT_PINNED = {"pip", "setuptools", "wheel", "hf-token-prune"}
HEADER = """\
# The tested versions `make` installs (pip install -c constraints.txt): a fresh clone passes on any day.
# pyproject.toml keeps the ranges users install from. Regenerate with `make test-latest lock` after the newest
# versions pass `make test-full`; never edit by hand. torch is pinned without its local label (+cpu): pip takes the
# CPU build from this machine's disk.
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    found = {canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    return {name: version.split("+")[0] for name, version in sorted(found.items()) if name not in NOT_PINNED}


def pinned(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonical(name)] = version.strip()
    return pins


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("constraints", type=Path)
    parser.add_argument("--write", action="store_true", help="pin the installed versions in CONSTRAINTS")
    args = parser.parse_args(argv)
    now = installed()
    if args.write:
        args.constraints.write_text(HEADER + "".join(f"{name}=={version}\n" for name, version in now.items()))
        print(f"pinned {len(now)} packages in {args.constraints}")
        return 0
    pins = pinned(args.constraints) if args.constraints.is_file() else {}
    differ = [(name, pins.get(name, "-"), now[name]) for name in now if pins.get(name) != now[name]]
    if not differ:
        print(f"every installed package is at its version in {args.constraints}")
        return 0
    width = max(len(name) for name, _, _ in differ)
    print(f"{'package':<{width}}  {'pinned':<12} installed")
    for name, pin, version in differ:
        print(f"{name:<{width}}  {pin:<12} {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
