#!/usr/bin/env bash
# Create the benchmark's own environment (.bench-env): castate plus its peers, which are never
# castate dependencies (LangGraph and pycryptodome for langgraph_bench.py too). MARSYS 0.2.1
# declares Python >= 3.12 but its state module runs on 3.11.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
if [ ! -x .bench-env/bin/python ]; then
  "$PYTHON" -m venv .bench-env
fi
.bench-env/bin/python -m pip install --quiet --upgrade pip
.bench-env/bin/python -m pip install --quiet -e ".[langgraph]"
.bench-env/bin/python -m pip install --quiet --ignore-requires-python "marsys==0.2.1" "numpy<2.4"
.bench-env/bin/python -m pip install --quiet "langgraph-checkpoint-sqlite==3.1.2" "langgraph-checkpoint==4.3.2"
# LangGraph's EncryptedSerializer.from_pycryptodome_aes (langgraph_bench.py's *-encserde systems)
.bench-env/bin/python -m pip install --quiet "pycryptodome>=3.20"
echo "benchmark environment ready: .bench-env/bin/python -m tools.bench.run --help"
