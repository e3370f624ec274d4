"""Fetch transformers' common model tests for the installed transformers version (run by `make test-full`).

transformers ships its tests only in the sdist on PyPI, which holds `tests/test_modeling_common.py` (ModelTesterMixin)
and `tests/test_configuration_common.py` (ConfigTester) but not the per-model test folders nor the modules those two
import (`tests/exporters`, `tests/generation`, `tests/utils`): third_party/transformers_tests/ holds our stand-ins for
those. This script puts the two upstream files and transformers' LICENSE (Apache-2.0) beside the stand-ins and writes
VERSION last; tests/test_transformers_common.py refuses to run when VERSION differs from the installed transformers.
"""

import importlib.metadata
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


TARGET = Path(__file__).resolve().parent.parent / "third_party" / "transformers_tests"
UPSTREAM_FILES = {
    "tests/test_modeling_common.py": "test_modeling_common.py",
    "tests/test_configuration_common.py": "test_configuration_common.py",
    "LICENSE": "LICENSE",
}


def main():
    version = importlib.metadata.version("transformers")
    stamp = TARGET / "VERSION"
    if stamp.exists() and stamp.read_text().strip() == version and all((TARGET / n).exists() for n in UPSTREAM_FILES.values()):
        print(f"transformers {version} common tests already in {TARGET}")
        return
    stamp.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as download:
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"transformers=={version}", "--dest", download],
        )  # fmt: skip
        if fetched.returncode != 0:
            raise SystemExit(
                f"could not download the sdist of transformers {version} from the package index (pip said why above): "
                "only transformers' common tests (make test-full) need it."
            )
        (sdist,) = Path(download).glob(f"transformers-{version}.tar.gz")
        with tarfile.open(sdist) as archive:
            for member, name in UPSTREAM_FILES.items():
                source = archive.extractfile(f"transformers-{version}/{member}")
                (TARGET / name).write_bytes(source.read())
    stamp.write_text(version + "\n")
    print(f"fetched transformers {version}'s {', '.join(UPSTREAM_FILES)} from its PyPI sdist into {TARGET}")


if __name__ == "__main__":
    main()
