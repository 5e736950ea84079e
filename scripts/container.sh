#!/usr/bin/env bash
# Entry point of the container image (docker-compose.yml): the same `consulta` commands as scripts/run.sh.
#   container.sh api   assemble/verify the answering model into the models volume, then serve the API
#   container.sh ui    serve the Streamlit UI (it talks to the API at $CONSULTA_API_URL)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-api}" in
    api)
        consulta models prepare >/dev/null
        exec consulta serve --host 0.0.0.0 --port "${CONSULTA_API__PORT:-8000}"
        ;;
    ui)
        exec consulta ui --port "${CONSULTA_UI__PORT:-8501}"
        ;;
    *)
        echo "usage: container.sh api|ui" >&2
        exit 2
        ;;
esac
