#!/usr/bin/env bash
# Install what a ComfyUI checkout needs into the active Python environment, never replacing its torch.
#
#   bash .ci/setup-comfyui.sh COMFYUI_FOLDER                     # a checkout you already have
#   bash .ci/setup-comfyui.sh --clone URL_OR_PATH [--ref REF] COMFYUI_FOLDER   # clone one there first
#
# Python: $PYTHON, else `python` on PATH (activate your venv first). torch must already be installed
# (e.g. `pip install torch==2.13.0`, or the build for your GPU): it is pinned with a pip constraints file
# to the exact version found, so nothing below can pull another torch or CUDA wheels.
# - torchvision: the release made for that torch (0.N+15 for torch 2.N), resolved under the same pin. When
#   its C++ ops cannot load (a CUDA-linked wheel on a CPU-only torch) the import hook
#   .ci/torchvision_op_schemas.py is installed so `import torchvision` still works (ComfyUI imports it
#   at start-up; the ops it cannot load are ones our tests never call).
# - torchaudio: the release matching torch when the registry has one; otherwise left out, and ComfyUI
#   skips its audio nodes (it says so in its log).
# - spandrel (ComfyUI's upscale models): installed under the pin, so its torch/torchvision needs are met.
# - the rest of ComfyUI's requirements.txt as listed (frontend, templates, docs: the HTTP server works),
#   plus `requests` (ComfyUI's frontend manager imports it).
# At the end it checks torch is unchanged and that ComfyUI's core imports, on the CPU.
set -euo pipefail

usage() { sed -n '4,5p' "$0" | sed 's/^# *//' >&2; exit 2; }
clone="" ref="" folder=""
while [ $# -gt 0 ]; do
    case "$1" in
        --clone) clone=${2:?--clone needs a URL or path}; shift 2 ;;
        --ref) ref=${2:?--ref needs a branch or tag}; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "setup-comfyui: unknown option $1" >&2; usage ;;
        *) [ -z "$folder" ] || usage; folder=$1; shift ;;
    esac
done
[ -n "$folder" ] || usage
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python}
pip_install() { "$py" -m pip install -q "$@"; }

if [ -n "$clone" ]; then
    [ ! -e "$folder" ] || { echo "setup-comfyui: $folder exists; give a new folder to clone into, or drop --clone" >&2; exit 2; }
    git clone -q --depth 1 ${ref:+--branch "$ref"} "$clone" "$folder"
fi
if [ ! -f "$folder/comfy/model_patcher.py" ] || [ ! -f "$folder/nodes.py" ] || [ ! -f "$folder/requirements.txt" ]; then
    echo "setup-comfyui: $folder is not a ComfyUI checkout (no comfy/model_patcher.py, nodes.py, requirements.txt)" >&2
    exit 2
fi
folder=$(cd "$folder" && pwd)

if ! torch_version=$("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null); then
    echo "setup-comfyui: torch is not installed for $("$py" -c 'import sys; print(sys.executable)');" \
        "install it first (pip install torch==2.13.0, or the build for your GPU)" >&2
    exit 2
fi
echo "setup-comfyui: ComfyUI at $folder; Python $("$py" -c 'import sys; print(sys.executable)'); torch $torch_version (kept)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "torch==$torch_version" > "$work/constraints.txt"
base=${torch_version%%+*}
minor=$(echo "$base" | cut -d. -f2)
major=$(echo "$base" | cut -d. -f1)

# torchvision made for this torch; any release the pin allows when that one is not in the registry.
if [ "$major" = 2 ] && pip_install -c "$work/constraints.txt" "torchvision==0.$((minor + 15)).*" 2>/dev/null; then
    :
else
    pip_install -c "$work/constraints.txt" torchvision
fi
if ! "$py" -c 'import torchvision' 2>/dev/null; then
    site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    cp "$here/torchvision_op_schemas.py" "$site/dp3d_torchvision_op_schemas.py"
    echo 'import dp3d_torchvision_op_schemas' > "$site/dp3d_torchvision_op_schemas.pth"
    "$py" -c 'import torchvision' || { echo "setup-comfyui: torchvision does not import, even with the hook" >&2; exit 1; }
    echo "setup-comfyui: torchvision's C++ ops do not load on this torch: installed the import hook" \
        "$site/dp3d_torchvision_op_schemas.pth (torchvision's Python parts work; nms/roi_align/decode_* do not)"
fi
if pip_install -c "$work/constraints.txt" "torchaudio==$base" 2>/dev/null && "$py" -c 'import torchaudio' 2>/dev/null; then
    echo "setup-comfyui: torchaudio $base installed"
else
    "$py" -m pip uninstall -q -y torchaudio 2>/dev/null || true
    echo "setup-comfyui: no torchaudio for torch $base here: left out (ComfyUI skips its audio nodes)"
fi
grep -v -E '^\s*(#|$)' "$folder/requirements.txt" \
    | grep -v -i -E '^\s*(torch|torchvision|torchaudio)\s*([<>=!~;].*)?$' > "$work/requirements.txt"
pip_install -c "$work/constraints.txt" -r "$work/requirements.txt" requests

after=$("$py" -c 'import torch; print(torch.__version__)')
if [ "$after" != "$torch_version" ]; then
    echo "setup-comfyui: torch changed from $torch_version to $after: this must not happen" >&2
    exit 1
fi
"$py" - "$folder" <<'PY'
import sys

sys.path.insert(0, sys.argv[1])
from comfy.cli_args import args

args.cpu = True
import comfy.model_management  # noqa: E402,F401
import comfy.sd  # noqa: E402,F401
import comfy.samplers  # noqa: E402,F401

print("setup-comfyui: ComfyUI's core imports on the CPU")
PY
echo "setup-comfyui: done; torch is still $after. Tests: COMFYUI_PATH=$folder OMP_NUM_THREADS=1 python -m pytest"
