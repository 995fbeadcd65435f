#!/usr/bin/env bash
# A first install from the sdist, as a user or a packager would do it (CI runs this):
#   1. build the sdist; it must hold the Cython sources, the tests, the docs and the scripts;
#   2. install it in a fresh venv; the extension must build (CHATCORE_REQUIRE_EXTENSIONS=1)
#      and `chatcore-server --version` must say `hot path: cython`;
#      With a compiler that fails (CC=false) that install must fail, not fall back;
#   3. the install must add no top-level package but chatcore and chatcore_bench;
#   4. smoke test: the installed server, two library clients, one message, SIGTERM, exit 0;
#   5. from the unpacked sdist: every test collects, and the config and chat tests pass
#      there (on the fallback: step 2 proved the build, and this saves one).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CHATCORE_REQUIRE_EXTENSIONS=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

echo "== sdist ($SECONDS s) =="
python -m pip install --quiet build
python -m build --sdist --outdir "$work/dist" . >"$work/build.log" 2>&1 \
    || { cat "$work/build.log"; exit 1; }
sdist=$(echo "$work"/dist/chatcore-*.tar.gz)
tar -tzf "$sdist" >"$work/contents"
for path in ext/_speedups.pyx ext/_loadgen.pyx tests/conftest.py docs/protocol.md \
            scripts/test.sh benchmarks/loadgen.py server.py LICENSE; do
    grep -q "^chatcore-[^/]*/$path\$" "$work/contents" || { echo "the sdist lacks $path"; exit 1; }
done
echo "$(basename "$sdist"): $(wc -l <"$work/contents") entries"

echo "== install in a fresh venv ($SECONDS s) =="
python -m venv "$work/venv"
venv_python=$work/venv/bin/python
if CC=false "$venv_python" -m pip install --quiet "$sdist" >"$work/failed.log" 2>&1; then
    echo "with CHATCORE_REQUIRE_EXTENSIONS=1, a failed extension build did not fail the install"
    exit 1
fi
echo "a failed extension build fails the install, as CHATCORE_REQUIRE_EXTENSIONS=1 asks"
"$venv_python" -m pip install --quiet "$sdist"
cd "$work"                      # away from the checkout: only the installed package is seen
version=$("$work/venv/bin/chatcore-server" --version)
echo "$version"
case $version in
    *"hot path: cython"*) ;;
    *) echo "the sdist install did not build the extension"; exit 1 ;;
esac
"$venv_python" - <<'EOF'
import importlib.metadata
files = importlib.metadata.distribution("chatcore").files
top = {str(f).split("/")[0] for f in files if str(f).endswith(".py")} - {"..", "."}
assert top == {"chatcore", "chatcore_bench"}, f"unexpected top-level packages: {sorted(top)}"
print("top-level packages:", ", ".join(sorted(top)))
EOF

echo "== smoke test ($SECONDS s) =="
"$venv_python" "$root/scripts/smoke_test.py"

echo "== tests from the unpacked sdist ($SECONDS s) =="
tar -xzf "$sdist" -C "$work"
cd "$work"/chatcore-*/
unset CHATCORE_REQUIRE_EXTENSIONS
export CHATCORE_NO_EXTENSIONS=1
"$venv_python" -m pip install --quiet -e ".[test]"
"$venv_python" -m pytest --collect-only -q -p no:cacheprovider | tail -1
"$venv_python" -m pytest -q -p no:cacheprovider -n 2 \
    tests/test_config.py tests/test_server_chat.py
echo "== install check done ($SECONDS s) =="
