#!/usr/bin/env bash
# The test suite on Google Colab's stack, as Colab runs it today (googlecolab/backend-info,
# 2026-08): Python 3.13, TensorFlow 2.20.0, Keras 3.13.2, numpy 2.1.3. In a venv of its
# own (.venv-colab); arguments go to pytest (e.g. -x, or a test file).
#
#     bash tools/colab_stack.sh [PYTEST ARGS]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.13}
command -v "$PYTHON" >/dev/null || { echo "colab_stack: $PYTHON not found (Colab runs Python 3.13)" >&2; exit 2; }
rm -rf .venv-colab
"$PYTHON" -m venv .venv-colab
. .venv-colab/bin/activate
pip install -q uv
uv pip install -q "tensorflow==2.20.0" "keras==3.13.2" "numpy==2.1.3" -e ".[test]"
python - <<'PY'
import sys, keras, numpy, tensorflow
print(f"colab_stack: Python {sys.version.split()[0]}, TensorFlow {tensorflow.__version__}, "
      f"Keras {keras.__version__}, numpy {numpy.__version__}")
PY
python -m pytest -q "$@"
