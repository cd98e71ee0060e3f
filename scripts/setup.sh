#!/usr/bin/env bash
# Install what baton's stack and tests need, when missing (Debian; run as root).
set -euo pipefail
need=()
for pair in mariadbd:mariadb-server mariadb:mariadb-client sysbench:sysbench haproxy:haproxy \
            protoc:protobuf-compiler promtool:prometheus etcd:etcd-server etcdctl:etcd-client \
            javac:default-jdk-headless; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
done
# etcd-client's build compiles etcd's protos, which import google/protobuf/*.proto.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
# MariaDB Connector/J, for the Java driver tests.
[ -f /usr/share/java/mariadb-java-client.jar ] || need+=(libmariadb-java)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
python3 -c 'import pymysql, pytest, mysql.connector' 2>/dev/null || python3 -m pip install -q pymysql pytest mysql-connector-python
