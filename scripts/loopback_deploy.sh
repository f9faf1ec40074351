#!/usr/bin/env bash
# Deploy this app on 127.0.0.1 (1 SuperLink + N SuperNodes, TLS, node
# authentication, free ports), run it once, print the final status, stop
# everything it started. Extra arguments are run-config overrides, e.g.
#   scripts/loopback_deploy.sh --nodes 2 num-stages=2 rounds-per-stage=2 train-size=30
set -euo pipefail
cd "$(dirname "$0")/.."
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 FLWR_DISABLE_UPDATE_CHECK=1 \
  HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python -m fcit_flower.launch.deployment --app "$PWD" "$@"
