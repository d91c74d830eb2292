#!/bin/sh
# kafka-run-class.sh CLASS [ARG...]: run a Kafka main class with every jar in
# libs/ on the classpath. Written for kraftops (scripts/kafka-dist), not
# Apache's script; it honours the same environment variables:
#   JAVA_HOME                   java is $JAVA_HOME/bin/java, else java on PATH
#   KAFKA_HEAP_OPTS             default -Xmx256M
#   KAFKA_JVM_PERFORMANCE_OPTS  default G1 settings like Apache's
#   KAFKA_GC_LOG_OPTS, KAFKA_JMX_OPTS, JMX_PORT   passed through when set
#   KAFKA_LOG4J_OPTS            default -Dlog4j2.configurationFile=<base>/config/tools-log4j2.yaml
#   LOG_DIR                     default <base>/logs, given to log4j as kafka.logs.dir
#   KAFKA_OPTS                  passed last, before the class (e.g. -javaagent:...)
#   CLASSPATH                   put before libs/
# It ends in `exec java`, so a systemd unit's main process is the JVM.
# Like Apache's script it leaves connect-file (the FileStream connectors) off
# the classpath: Connect loads them only from plugin.path.
if [ $# -lt 1 ]; then
  echo "usage: $0 CLASS [ARG...]" >&2
  exit 1
fi

self=$(readlink -f -- "$0")
base=$(dirname -- "$(dirname -- "$self")")

cp=${CLASSPATH:-}
for jar in "$base"/libs/*.jar; do
  case ${jar##*/} in
    connect-file-*) continue ;;
  esac
  cp=${cp:+$cp:}$jar
done

LOG_DIR=${LOG_DIR:-$base/logs}
[ -d "$LOG_DIR" ] || mkdir -p "$LOG_DIR" 2>/dev/null || true

KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx256M}
KAFKA_JVM_PERFORMANCE_OPTS=${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true}
KAFKA_LOG4J_OPTS=${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=$base/config/tools-log4j2.yaml}
if [ -n "${JMX_PORT:-}" ]; then
  KAFKA_JMX_OPTS="${KAFKA_JMX_OPTS:--Dcom.sun.management.jmxremote -Dcom.sun.management.jmxremote.authenticate=false -Dcom.sun.management.jmxremote.ssl=false} -Dcom.sun.management.jmxremote.port=$JMX_PORT"
fi

if [ -n "${JAVA_HOME:-}" ]; then
  java=$JAVA_HOME/bin/java
else
  java=java
fi

class=$1
shift

# The *_OPTS variables are lists of words: split them, but never glob them.
set -f
# shellcheck disable=SC2086
exec "$java" $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS ${KAFKA_GC_LOG_OPTS:-} ${KAFKA_JMX_OPTS:-} \
  "-Dkafka.logs.dir=$LOG_DIR" $KAFKA_LOG4J_OPTS -cp "$cp" ${KAFKA_OPTS:-} "$class" "$@"
