#!/usr/bin/env bash
# Fetch the wheels that the GPU machine lacks into .whl/ (run HERE, on a machine that reaches PyPI).
#
#   bash benchmarks/fetch_wheels.sh          # from the repo root
#
# The GPU machine (see benchmarks/device_session.sh) has python3 3.12 with torch, triton, pytest,
# hypothesis, pluggy, pyyaml, rich, numpy and matplotlib, but reaches no package registry. This script
# downloads x86_64 CPython 3.12 wheels of what rlsdk's kernel tests and benchmarks still need there:
#
#   omegaconf 2.3.0 + antlr4-python3-runtime 4.9.3  rlsdk.config (the trainer) imports omegaconf;
#                                                   antlr 4.9.3 is an sdist only, so it is built here
#   liger-kernel, cut-cross-entropy                 the peers of benchmarks/kernels.py
#
# Their other requirements (torch, triton, PyYAML) are in the GPU image and are NOT fetched. rlsdk
# itself is not a wheel: the repo travels, and device_session.sh installs its metadata from it.
# .whl/ is emptied first (two versions of one package stop the install there) and git-ignored through
# .git/info/exclude. The script prints each wheel's Requires-Dist and fails above 20 MiB in total.
set -euo pipefail

cd "$(git rev-parse --show-toplevel)"
PY=${PYTHON:-python3}
DEST=.whl
MAX_MIB=20

# Versions: bump here (and check Requires-Dist below) when a newer peer should be measured.
OMEGACONF=omegaconf==2.3.0
ANTLR=antlr4-python3-runtime==4.9.3
LIGER=liger-kernel==0.8.5
CCE=cut-cross-entropy==25.1.1

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")" "$DEST"
grep -qxF "/$DEST/" "$exclude" 2>/dev/null || echo "/$DEST/" >>"$exclude"
rm -f "$DEST"/*.whl

# The flags of the device tool's wheel notes: binary wheels for CPython 3.12 on x86_64 Linux.
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$DEST" "$OMEGACONF" "$LIGER" "$CCE"

# antlr4-python3-runtime 4.9.3 has no wheel on PyPI: build the (pure-Python) wheel from its sdist.
"$PY" -m pip wheel --quiet --no-deps --no-binary=:all: -w "$DEST" "$ANTLR"

status=0
for whl in "$DEST"/*.whl; do
  case "$whl" in
    *-py3-none-any.whl | *-py2.py3-none-any.whl | *-cp312-*manylinux*x86_64*.whl) ;;
    *) echo "error: $whl does not install on CPython 3.12 x86_64" >&2; status=1 ;;
  esac
  echo "== $(basename "$whl") ($(du -k "$whl" | cut -f1) KiB)"
  # Requirements other than extras: each must be in the GPU image or among these wheels.
  unzip -p "$whl" '*.dist-info/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' | sed 's/^/   /' || true
done

wheels=("$DEST"/*.whl)
total_kib=$(du -ck "${wheels[@]}" | tail -n 1 | cut -f1)
echo "total: ${total_kib} KiB in ${#wheels[@]} wheels"
if ((total_kib > MAX_MIB * 1024)); then
  echo "error: the wheels exceed ${MAX_MIB} MiB (they travel with every device call)" >&2
  status=1
fi
exit "$status"
