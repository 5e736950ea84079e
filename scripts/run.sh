#!/usr/bin/env bash
# `make run`: prepare the model, ingest the demo corpus (docs/), start the API and the UI, print their URLs.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
CONSULTA="$VENV/bin/consulta"
export CONSULTA_DATA_DIR="${CONSULTA_DATA_DIR:-$PWD/data}"
API_HOST="${CONSULTA_API__HOST:-127.0.0.1}"
API_PORT="${CONSULTA_API__PORT:-8000}"
UI_PORT="${CONSULTA_UI__PORT:-8501}"
export CONSULTA_API_URL="${CONSULTA_API_URL:-http://$API_HOST:$API_PORT}"

echo "[run] preparing the answering model (assembled and verified once)" >&2
"$CONSULTA" models prepare >/dev/null
echo "[run] ingesting docs/ into the collection 'consulta' (unchanged files are skipped)" >&2
"$CONSULTA" ingest docs --collection consulta

# First run only: make the admin and show its password and API key once (kept nowhere in plain text).
if ! "$CONSULTA" users list --json 2>/dev/null | grep -q '"username"'; then
    echo "[run] first run: creating the admin account (sign in to the UI with it)" >&2
    "$CONSULTA" users create-admin --if-none
fi

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

mkdir -p "$CONSULTA_DATA_DIR/logs"
"$CONSULTA" serve --host "$API_HOST" --port "$API_PORT" >"$CONSULTA_DATA_DIR/logs/api.log" 2>&1 &
pids+=($!)
"$CONSULTA" ui --port "$UI_PORT" >"$CONSULTA_DATA_DIR/logs/ui.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 120); do
    if "$VENV/bin/python" -c "import httpx,sys; sys.exit(0 if httpx.get('$CONSULTA_API_URL/health', timeout=1).status_code == 200 else 1)" 2>/dev/null; then
        break
    fi
    if ! kill -0 "${pids[0]}" 2>/dev/null; then
        echo "[run] the API did not start; see $CONSULTA_DATA_DIR/logs/api.log:" >&2
        tail -20 "$CONSULTA_DATA_DIR/logs/api.log" >&2
        exit 1
    fi
    sleep 0.5
done
cat <<MSG

  Consulta is running.
    Chat (Streamlit UI):  http://localhost:$UI_PORT
    API:                  $CONSULTA_API_URL   (OpenAPI docs: $CONSULTA_API_URL/docs)
    Logs:                 $CONSULTA_DATA_DIR/logs/
  Try:  $CONSULTA ask "What does Consulta do?"
  Press Ctrl-C to stop.

MSG
wait -n "${pids[@]}"
