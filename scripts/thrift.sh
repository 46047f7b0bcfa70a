#!/usr/bin/env bash
# Serve the output tables over JDBC/ODBC: the Spark Thrift Server (HiveServer2 protocol) with
# Delta, with cvm.<table> and cvm.<table>_latest registered at start-up (docs/bi.md).
#
#   bash scripts/thrift.sh start [--port 10000] [--host 127.0.0.1] [--master 'local[*]']
#                                [--timeout 300] [cvm options: --config F --set key=value ...]
#   bash scripts/thrift.sh run   [same options]    # in the foreground (containers); Ctrl-C stops
#   bash scripts/thrift.sh stop | status
#
# Runs `spark-submit jobs/cvm_job.py thrift` from the installed pyspark (the Thrift server
# and Hive JDBC jars ship in pyspark/jars; Delta comes via --packages and, for the JDBC
# sessions, --driver-class-path). `start` returns once the server accepts connections, or
# stops it after --timeout seconds (default $CVM_THRIFT_TIMEOUT or 300) showing the end of
# the log. Pid file, log and scratch space live in $CVM_THRIFT_DIR (default ./run/thrift):
# one server per directory. Extra spark-submit options: $CVM_THRIFT_SUBMIT_ARGS, e.g.
# "--driver-memory 2g --conf spark.ui.port=4050". Beyond loopback (--host 0.0.0.0) the config
# must set thrift.authentication (ldap or kerberos; docs/bi.md): otherwise exit code 2.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. scripts/env.sh
RUN_DIR=${CVM_THRIFT_DIR:-$ROOT/run/thrift}
PID_FILE=$RUN_DIR/thrift.pid
LOG_FILE=$RUN_DIR/thrift.log
READY_MARKER="cvm thrift server ready"

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

running_pid() {  # prints the pid from the pid file if that process is alive
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid=$(cat "$PID_FILE")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

stop_server() {
  local pid
  if ! pid=$(running_pid); then
    echo "thrift: not running (no live pid in $PID_FILE)"
    rm -f "$PID_FILE"
    return 0
  fi
  # the server was started in its own process group (setsid): spark-submit's JVM and the
  # Python driver it launched get the signal together
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 1
  done
  if kill -0 -- "-$pid" 2>/dev/null; then
    echo "thrift: still alive after 30s, sending SIGKILL" >&2
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
  rm -rf "${RUN_DIR:?}/tmp"
  echo "thrift: stopped (pid $pid)"
}

command=${1:-}
[ -n "$command" ] || usage
shift
case $command in
  stop) stop_server; exit 0 ;;
  status)
    if pid=$(running_pid); then
      echo "thrift: running (pid $pid), log $LOG_FILE"; grep -m1 "$READY_MARKER" "$LOG_FILE" || true
      exit 0
    fi
    echo "thrift: not running"; exit 3 ;;
  start|run) ;;
  -h|--help|help) usage ;;
  *) echo "thrift: unknown command '$command'" >&2; usage ;;
esac

PORT=10000
HOST=127.0.0.1
MASTER='local[*]'
TIMEOUT=${CVM_THRIFT_TIMEOUT:-300}
CVM_ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --port) PORT=$2; shift 2 ;;
    --host) HOST=$2; shift 2 ;;
    --master) MASTER=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    *) CVM_ARGS+=("$1"); shift ;;
  esac
done

# the config, the authentication for --host and the environment, before any JVM starts:
# a config error (e.g. no authentication beyond loopback) ends here with exit code 2
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m cvm_spark thrift --check \
  --host "$HOST" --port "$PORT" "${CVM_ARGS[@]}" || exit $?
if ! command -v java >/dev/null 2>&1 && [ -z "${JAVA_HOME:-}" ]; then
  echo "thrift: Java 17+ is required (java on PATH or JAVA_HOME)" >&2; exit 1
fi
if pid=$(running_pid); then
  echo "thrift: already running (pid $pid); bash scripts/thrift.sh stop" >&2; exit 1
fi
CONNECT_HOST=$HOST
[ "$HOST" = "0.0.0.0" ] && CONNECT_HOST=127.0.0.1
if port_open "$CONNECT_HOST" "$PORT"; then
  echo "thrift: port $PORT on $CONNECT_HOST is already in use" >&2; exit 1
fi

SPARK_BIN=$("$PY" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "bin"))')
DELTA=$(PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c \
  'from cvm_spark.common.session import delta_maven_coordinates as c; print(c())')
# Hive's per-session resources and operation logs and Spark's scratch space go to
# java.io.tmpdir: keep them in the run directory (emptied on stop)
mkdir -p "$RUN_DIR/tmp"
# this checkout's cvm_spark for the driver; the executors need no Python code (no UDFs)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$(command -v "$PY")}
# shellcheck disable=SC2206  # word splitting of the user's extra options is intended
EXTRA=(${CVM_THRIFT_SUBMIT_ARGS:-})
# JDBC sessions load the Delta catalog through the system class loader (delta-io/delta#1332),
# so Delta's jars also go on --driver-class-path. Their paths are known once Ivy has resolved
# --packages: ask a short spark-submit run (no SparkContext), and keep the answer per version.
CP_FILE=$RUN_DIR/driver-classpath-${DELTA//:/_}.txt
driver_cp=$(cat "$CP_FILE" 2>/dev/null || true)
cp_ok=${driver_cp:+yes}
IFS=: read -r -a cp_jars <<<"$driver_cp"
for jar in "${cp_jars[@]}"; do [ -f "$jar" ] || cp_ok=""; done
if [ -z "$cp_ok" ]; then
  echo "thrift: resolving $DELTA"
  "$SPARK_BIN/spark-submit" --master 'local[1]' --packages "$DELTA" \
    "$ROOT/jobs/cvm_job.py" thrift --print-driver-classpath "${CVM_ARGS[@]}" \
    >"$RUN_DIR/resolve.log" 2>&1 || true
  driver_cp=$(sed -n 's/^cvm thrift driver class path: //p' "$RUN_DIR/resolve.log")
  if [ -z "$driver_cp" ]; then
    echo "thrift: found no Delta jars for $DELTA (Ivy needs Maven Central once);" \
         "end of $RUN_DIR/resolve.log:" >&2
    tail -n 20 "$RUN_DIR/resolve.log" >&2
    exit 1
  fi
  echo "$driver_cp" >"$CP_FILE"
fi
SUBMIT=("$SPARK_BIN/spark-submit" --master "$MASTER" --name cvm-thrift
  --packages "$DELTA" --driver-class-path "$driver_cp"
  --driver-java-options "-Djava.io.tmpdir=$RUN_DIR/tmp -Dderby.stream.error.file=$RUN_DIR/derby.log"
  "${EXTRA[@]}"
  "$ROOT/jobs/cvm_job.py" thrift --host "$HOST" --port "$PORT" "${CVM_ARGS[@]}")

if [ "$command" = run ]; then
  exec "${SUBMIT[@]}"
fi

# own session and process group, so `stop` reaches the JVM and its Python driver together
setsid nohup "${SUBMIT[@]}" >"$LOG_FILE" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$PID_FILE"
echo "thrift: starting (pid $pid, log $LOG_FILE, up to ${TIMEOUT}s)"
start=$SECONDS
until grep -q "$READY_MARKER" "$LOG_FILE" 2>/dev/null && port_open "$CONNECT_HOST" "$PORT"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    code=0
    wait "$pid" || code=$?
    echo "thrift: the server exited during start-up (exit code $code); end of $LOG_FILE:" >&2
    tail -n 30 "$LOG_FILE" >&2
    rm -f "$PID_FILE"
    exit $((code == 0 ? 1 : code))
  fi
  if [ $((SECONDS - start)) -ge "$TIMEOUT" ]; then
    echo "thrift: not accepting connections on $CONNECT_HOST:$PORT after ${TIMEOUT}s;" \
         "stopping it. End of $LOG_FILE:" >&2
    tail -n 30 "$LOG_FILE" >&2
    stop_server >&2
    exit 1
  fi
  sleep 1
done
grep -m1 "$READY_MARKER" "$LOG_FILE"
echo "thrift: up in $((SECONDS - start))s; beeline -u jdbc:hive2://$CONNECT_HOST:$PORT/"
