#!/usr/bin/env bash
# Set up the project's Python environment (idempotent; re-runs only when pyproject.toml changes).
#   CPU host (no NVIDIA GPU): .venv with torch==2.13.0 (CPU build) + rpg-verl[test] (verl 0.9.1 and its verl-core pieces).
#   GPU host: .venv with rpg-verl[test,vllm] (verl's CUDA pins for torch / vLLM); RPG_EXTRAS=test,vllm,megatron adds Megatron.
# Environment: RPG_VENV (default: <repo>/.venv), RPG_PYTHON (default: python3.11, else python3), RPG_EXTRAS.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RPG_VENV:-$repo/.venv}"
py="${RPG_PYTHON:-$(command -v python3.11 || command -v python3)}"

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    host=gpu; extras="${RPG_EXTRAS:-test,vllm}"
else
    host=cpu; extras="${RPG_EXTRAS:-test}"
fi
stamp="$venv/.rpg-setup-$(cat "$repo/pyproject.toml" | sha1sum | cut -c1-12)-$host-${extras//,/_}"
if [ -f "$stamp" ]; then
    exit 0
fi

echo "[setup] $host host: creating $venv with extras [$extras] (a few minutes, once)" >&2
if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip >/dev/null
if [ "$host" = cpu ]; then
    # First, so that nothing later pulls a multi-GB CUDA build of torch.
    "${pip[@]}" install "torch==2.13.0"
fi
"${pip[@]}" install -e "$repo[$extras]"
"$venv/bin/python" -m rpg_ext check
rm -f "$venv"/.rpg-setup-*
touch "$stamp"
echo "[setup] done: $venv" >&2
