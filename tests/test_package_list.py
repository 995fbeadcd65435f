"""pyproject.toml lists its packages by hand (benchmarks/ installs as chatcore_bench): every
package directory in the tree must be on that list, or a non-editable install leaves it out."""
from __future__ import annotations

import os
import tomllib

from tests.serverproc import ROOT

INSTALLED_AS = {"chatcore": "chatcore", "benchmarks": "chatcore_bench"}


def tree_packages() -> set[str]:
    found = set()
    for top, installed in INSTALLED_AS.items():
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            if "__init__.py" in files:
                relative = os.path.relpath(folder, os.path.join(ROOT, top))
                parts = [] if relative == "." else relative.split(os.sep)
                found.add(".".join([installed, *parts]))
    return found


def test_every_package_in_the_tree_is_installed():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    assert tree_packages() - listed == set()
