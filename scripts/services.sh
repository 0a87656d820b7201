#!/usr/bin/env bash
# A local PostgreSQL cluster and an MLflow tracking server backed by it, for sweeps whose workers
# run in several processes or on several hosts (README: "Several machines").
#
#   scripts/services.sh up        # start both (idempotent); prints the storage= and tracking.uri= to use
#   scripts/services.sh status    # running or not, and the same two settings
#   scripts/services.sh down      # stop both; the data stays in $SERVICES_DIR
#   scripts/services.sh install   # apt-get install postgresql when its binaries are missing (root only)
#
# Settings (environment):
#   SERVICES_DIR   where the cluster, the artifacts, the logs and the state live (default: <repo>/.services)
#   SERVICES_HOST  address both servers listen on (default 127.0.0.1; another host's workers need this
#                  host's LAN address here, and the PostgreSQL cluster then accepts password logins from any host)
#   PG_PORT, MLFLOW_PORT  ports (default: free ones picked on the first `up`, then kept)
#   PYTHON         the Python that has lyricslab[postgres] (default: .venv/bin/python, else python3)
#   MLFLOW_SERVER_ARGS  more `mlflow server` options, e.g. "--allowed-hosts db-host,db-host:5000"
#   PG_BIN         folder with initdb/pg_ctl (default: the newest /usr/lib/postgresql/*/bin, else PATH)
#
# PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user that
# Debian's package creates. Logins use a random password (scram-sha-256), kept in $SERVICES_DIR/state.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${SERVICES_DIR:-$ROOT/.services}"
HOST="${SERVICES_HOST:-127.0.0.1}"
PGDATA="$DIR/pg"
STATE="$DIR/state"
DB_USER=lyricslab
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

die() { echo "error: $*" >&2; exit 1; }

pg_bin() {
    if [[ -n "${PG_BIN:-}" ]]; then [[ -x "$PG_BIN/initdb" ]] && echo "$PG_BIN"; return; fi
    local newest
    newest="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    if [[ -n "$newest" && -x "$newest/initdb" ]]; then echo "$newest"; return; fi
    if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
    return 1
}

install_postgres() {
    if pg_bin >/dev/null; then return; fi
    [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null \
        || die "PostgreSQL is not installed; install it (Debian/Ubuntu: sudo apt-get install postgresql) or set PG_BIN"
    echo "installing postgresql with apt-get ..." >&2
    local log
    log="$(mktemp)"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; } \
            </dev/null >"$log" 2>&1; then
        tail -n 20 "$log" >&2; rm -f "$log"; die "apt-get install postgresql failed (output above)"
    fi
    rm -f "$log"
    pg_bin >/dev/null || die "postgresql is installed but no initdb was found${PG_BIN:+ in PG_BIN=$PG_BIN}"
}

# Commands that touch the cluster run as its owner: `postgres` when we are root.
as_owner() {
    if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

load_state() {
    # shellcheck disable=SC1090
    [[ -f "$STATE" ]] && source "$STATE"
    PG_PORT="${PG_PORT:-${SAVED_PG_PORT:-}}"
    MLFLOW_PORT="${MLFLOW_PORT:-${SAVED_MLFLOW_PORT:-}}"
}

save_state() {
    (umask 077 && cat >"$STATE") <<EOF
SAVED_PG_PORT=$PG_PORT
SAVED_MLFLOW_PORT=$MLFLOW_PORT
PG_PASSWORD=$PG_PASSWORD
STORAGE_URL=$(storage_url optuna)
TRACKING_URI=$(tracking_uri)
EOF
}

storage_url() { echo "postgresql+psycopg://$DB_USER:$PG_PASSWORD@$HOST:$PG_PORT/$1"; }
tracking_uri() { echo "http://$HOST:$MLFLOW_PORT"; }

pg_running() { [[ -d "$PGDATA" ]] && as_owner "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }

mlflow_pid() {
    local pid
    pid="$(cat "$DIR/mlflow.pid" 2>/dev/null)" || return 1
    kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start_postgres() {
    if [[ "$(id -u)" == 0 ]]; then
        id postgres >/dev/null 2>&1 || die "PostgreSQL cannot run as root and there is no 'postgres' user; run as another user"
        chown postgres: "$DIR"
        runuser -u postgres -- test -w "$DIR" \
            || die "the postgres user cannot reach $DIR; set SERVICES_DIR to a folder it can reach (e.g. /srv/lyricslab)"
    fi
    if [[ ! -f "$PGDATA/PG_VERSION" ]]; then
        PG_PASSWORD="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
        local pwfile="$DIR/.initdb-password"
        (umask 077 && echo "$PG_PASSWORD" >"$pwfile")
        [[ "$(id -u)" == 0 ]] && chown postgres: "$pwfile"
        as_owner "$BIN/initdb" -D "$PGDATA" -U "$DB_USER" --pwfile="$pwfile" --auth=scram-sha-256 \
            --encoding=UTF8 --no-locale >"$DIR/initdb.log" 2>&1 \
            || { rm -f "$pwfile"; cat "$DIR/initdb.log" >&2; die "initdb failed (log above)"; }
        rm -f "$pwfile"
        if [[ "$HOST" != 127.0.0.1 && "$HOST" != localhost ]]; then
            echo "host all all 0.0.0.0/0 scram-sha-256" | as_owner tee -a "$PGDATA/pg_hba.conf" >/dev/null
        fi
        save_state
    fi
    if ! pg_running; then
        # TCP only: a Unix socket path under a deep checkout can exceed the 107-byte limit.
        as_owner "$BIN/pg_ctl" -D "$PGDATA" -l "$DIR/postgres.log" -w -t 60 \
            -o "-h $HOST -p $PG_PORT -k ''" start >/dev/null \
            || { tail -n 20 "$DIR/postgres.log" >&2; die "PostgreSQL did not start (log: $DIR/postgres.log)"; }
    fi
    local db
    for db in optuna mlflow; do
        if [[ -z "$(PGPASSWORD="$PG_PASSWORD" "$BIN/psql" -h "$HOST" -p "$PG_PORT" -U "$DB_USER" -d postgres -tAc \
                "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]]; then
            PGPASSWORD="$PG_PASSWORD" "$BIN/createdb" -h "$HOST" -p "$PG_PORT" -U "$DB_USER" "$db"
        fi
    done
}

start_mlflow() {
    mlflow_pid >/dev/null && return
    "$PYTHON" -c 'import mlflow, psycopg' 2>/dev/null \
        || die "$PYTHON lacks mlflow or psycopg; pip install 'lyricslab[postgres]' (or make install) and retry"
    mkdir -p "$DIR/artifacts"
    local extra=()
    if [[ "$HOST" != 127.0.0.1 && "$HOST" != localhost ]]; then
        # MLflow answers only Host headers of localhost and private IP ranges unless told more.
        extra=(--allowed-hosts "$HOST,$HOST:$MLFLOW_PORT,localhost,localhost:*,127.0.0.1,127.0.0.1:*")
    fi
    # Its own session, so `down` can end the server and the workers it forks as one process group.
    # MLflow 3's background-job runner (GenAI jobs) idles at ~1.4 GB here and serves nothing lyricslab
    # uses: off unless the caller turns it on.
    # The backend store URI holds the database password: through the environment, never argv (ps shows argv).
    # shellcheck disable=SC2086  # MLFLOW_SERVER_ARGS is a list of options
    MLFLOW_BACKEND_STORE_URI="$(storage_url mlflow)" \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" setsid "$PYTHON" -m mlflow server --host "$HOST" --port "$MLFLOW_PORT" --workers 1 \
        --serve-artifacts --artifacts-destination "$DIR/artifacts" \
        "${extra[@]}" ${MLFLOW_SERVER_ARGS:-} >"$DIR/mlflow.log" 2>&1 </dev/null &
    echo $! >"$DIR/mlflow.pid"
    local i
    for i in $(seq 1 180); do
        if "$PYTHON" -c "import urllib.request as u; u.urlopen('$(tracking_uri)/health', timeout=2)" 2>/dev/null; then
            return
        fi
        mlflow_pid >/dev/null || break
        sleep 1
    done
    tail -n 20 "$DIR/mlflow.log" >&2
    stop_mlflow
    die "the MLflow server did not come up (log: $DIR/mlflow.log)"
}

stop_mlflow() {
    local pid i
    pid="$(mlflow_pid)" || { rm -f "$DIR/mlflow.pid"; return 0; }
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$DIR/mlflow.pid"
}

print_settings() {
    echo "storage=$(storage_url optuna)"
    echo "tracking.uri=$(tracking_uri)"
    echo "# or, keeping the password off command lines (and out of ps), in each host's environment:"
    echo "export LYRICSLAB_STORAGE='$(storage_url optuna)'"
    echo "export MLFLOW_TRACKING_URI='$(tracking_uri)'"
}

cmd="${1:-}"
case "$cmd" in
    install)
        install_postgres
        ;;
    up)
        install_postgres
        BIN="$(pg_bin)"
        mkdir -p "$DIR"
        load_state
        PG_PORT="${PG_PORT:-$(free_port)}"
        MLFLOW_PORT="${MLFLOW_PORT:-$(free_port)}"
        PG_PASSWORD="${PG_PASSWORD:-}"
        start_postgres
        save_state
        start_mlflow
        echo "PostgreSQL on $HOST:$PG_PORT and MLflow on $(tracking_uri); data in $DIR"
        echo "Pass these to every sweep (on every host), as settings or as environment variables:"
        print_settings
        ;;
    status)
        BIN="$(pg_bin)" || die "PostgreSQL is not installed"
        load_state
        [[ -f "$STATE" ]] || { echo "not set up (run: scripts/services.sh up)"; exit 3; }
        code=0
        if pg_running; then echo "postgresql: running on $HOST:$PG_PORT"; else echo "postgresql: stopped"; code=3; fi
        if pid="$(mlflow_pid)"; then echo "mlflow: running on $(tracking_uri) (pid $pid)"; else echo "mlflow: stopped"; code=3; fi
        print_settings
        exit "$code"
        ;;
    down)
        load_state
        stop_mlflow
        if BIN="$(pg_bin)" && pg_running; then
            as_owner "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
        fi
        echo "stopped (data kept in $DIR)"
        ;;
    *)
        echo "usage: scripts/services.sh up|down|status|install" >&2
        exit 2
        ;;
esac
