"""What ``python -m build`` makes: an sdist that is a full source tree, a wheel that installs
only chatcore's own packages. Runs where ``build`` is installed (scripts/check_install.sh
installs it, then also installs the sdist in a fresh venv and chats through it)."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile

import pytest

from tests.serverproc import ROOT

pytest.importorskip("build")

pytestmark = [
    pytest.mark.slow, pytest.mark.timeout(600),
    pytest.mark.skipif(bool(os.environ.get("CHATCORE_NO_EXTENSIONS")),
                       reason="packaging is the same for both hot paths: checked once, in "
                              "the compiled pass"),
]


def build_dists(out):
    """The sdist, and a wheel built from it (pure Python: the extension is not the point).
    One build at a time: two in the same tree would share its egg-info."""
    env = {**os.environ, "CHATCORE_NO_EXTENSIONS": "1"}
    env.pop("CHATCORE_REQUIRE_EXTENSIONS", None)
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), ROOT],
                            capture_output=True, text=True, env=env, timeout=540,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    (sdist,) = out.glob("chatcore-*.tar.gz")
    (wheel,) = out.glob("chatcore-*.whl")
    return sdist, wheel


def test_the_sdist_is_a_source_tree_and_the_wheel_holds_only_chatcore(tmp_path):
    sdist, wheel = build_dists(tmp_path)
    check_sdist(sdist)
    check_wheel(wheel)


def check_sdist(sdist):
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    expected = {"ext/_speedups.pyx", "tests/conftest.py", "docs/protocol.md",
                "scripts/test.sh", "benchmarks/loadgen.py", "server.py", "LICENSE"}
    if os.path.exists(os.path.join(ROOT, ".git")):      # a checkout: every tracked source
        tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True,
                                 text=True, check=True)
        expected |= {path for path in tracked.stdout.split()
                     if path.startswith(("chatcore/", "ext/", "tests/", "docs/", "scripts/",
                                         "benchmarks/"))}
    assert not expected - names, f"missing from the sdist: {sorted(expected - names)}"
    assert not [name for name in names if name.endswith((".so", ".pyc"))]
    assert not [name for name in names if name.startswith("ext/") and name.endswith(".c")]


def check_wheel(path):
    """No generic top-level package (a "benchmarks" would clash with other projects')."""
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"chatcore", "chatcore_bench"}
    assert "chatcore_bench/loadgen.py" in names
    metadata = metadata.decode()
    assert "License-Expression: MIT" in metadata
    assert "Classifier: Programming Language :: Python :: 3.11" in metadata
