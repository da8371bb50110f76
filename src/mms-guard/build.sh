#!/usr/bin/env bash
# Compile the MMS management guard into a class folder that the serving
# launcher puts first on MMS's classpath (see README.md beside this script).
#
#   src/mms-guard/build.sh PYTHON OUT_DIR
#
# PYTHON is an interpreter with multi-model-server installed: the classes
# compile against that MMS's own jar. Needs a JDK (javac).
set -euo pipefail

python=${1:?usage: build.sh PYTHON OUT_DIR}
out_dir=${2:?usage: build.sh PYTHON OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)

command -v javac >/dev/null \
    || { echo "error: javac is needed to build the MMS guard (apt-get install openjdk-17-jdk-headless)" >&2; exit 1; }
mms_jar=$("$python" -c 'import mms, pathlib; print(pathlib.Path(mms.__file__).parent / "frontend" / "model-server.jar")')
[ -f "$mms_jar" ] || { echo "error: $mms_jar not found: is multi-model-server installed for $python?" >&2; exit 1; }

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
javac --release 11 -nowarn -proc:none -cp "$mms_jar" -d "$staging" $(find "$here" -name '*.java')
rm -rf "$out_dir"
mkdir -p "$(dirname "$out_dir")"
mv "$staging" "$out_dir"
chmod -R a+rX "$out_dir"
trap - EXIT
echo "built the MMS guard into $out_dir"
