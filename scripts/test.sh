#!/usr/bin/env bash
# Set up and run the whole test suite: once on the Cython hot path, once on the pure-Python
# fallback (CHATCORE_NO_EXTENSIONS=1). Extra arguments go to both pytest runs.
# Tests run in CHATCORE_TEST_WORKERS pytest-xdist processes (default 2; 0 runs them in this
# process, e.g. to use a debugger): they mostly wait on sockets, so two halve the time.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e ".[test]"
python -c "import chatcore.codec as c; print('hot path built:', c.codec_c is not None)"
# pytest-benchmark refuses to time under xdist (and says so in a warning, which this suite
# turns into an error): the microbenchmarks live in benchmarks/, not in this suite.
workers=(-n "${CHATCORE_TEST_WORKERS:-2}" --benchmark-disable)
echo "== test suite on the compiled hot path =="
python -m pytest "${workers[@]}" "$@"
echo "== test suite on the pure-Python fallback (CHATCORE_NO_EXTENSIONS=1) =="
CHATCORE_NO_EXTENSIONS=1 python -m pytest "${workers[@]}" "$@"
