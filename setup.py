"""Builds the optional Cython hot path (``ext/*.pyx`` -> ``chatcore.<name>``).

CHATCORE_NO_EXTENSIONS=1 skips the build; CHATCORE_REQUIRE_EXTENSIONS=1 (set in CI) makes a
failed build fatal instead of falling back to pure Python. Which build happened is printed.
"""
import glob
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

NO_EXTENSIONS = bool(os.environ.get("CHATCORE_NO_EXTENSIONS"))
REQUIRE_EXTENSIONS = bool(os.environ.get("CHATCORE_REQUIRE_EXTENSIONS"))


def _say(message):
    print(f"chatcore setup: {message}", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """Falls back to pure Python when the compiler fails, unless extensions are required."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure means "use the fallback"
            if REQUIRE_EXTENSIONS:
                raise
            _say(f"extension build failed ({exc}); the pure-Python fallback will be used")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            if REQUIRE_EXTENSIONS:
                raise
            _say(f"could not build {ext.name} ({exc}); the pure-Python fallback will be used")
        else:
            _say(f"built {ext.name}")


def extensions():
    os.chdir(os.path.dirname(os.path.abspath(__file__)))   # paths below are the tree's
    if NO_EXTENSIONS:
        _say("CHATCORE_NO_EXTENSIONS is set: building pure Python only")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRE_EXTENSIONS:
            raise
        _say("Cython is not installed: building pure Python only")
        return []
    from setuptools import Extension
    sources = sorted(glob.glob("ext/*.pyx"))
    if not sources:
        # An sdist made without MANIFEST.in's "graft ext" would silently install the fallback.
        if REQUIRE_EXTENSIONS:
            raise SystemExit("chatcore setup: no ext/*.pyx to build, and "
                             "CHATCORE_REQUIRE_EXTENSIONS is set")
        _say("no ext/*.pyx in this source tree: building pure Python only")
        return []
    modules = [
        Extension(f"chatcore.{os.path.splitext(os.path.basename(path))[0]}", [path],
                  extra_compile_args=["-O2"])
        for path in sources
    ]
    return cythonize(modules, language_level=3, quiet=True,
                     compiler_directives={"boundscheck": False, "wraparound": False,
                                          "cdivision": True})


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
