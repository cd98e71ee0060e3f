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
# The client matrix (tests/clients): PHP's mysqlnd (PDO, mysqli), Go's
# go-sql-driver/mysql (GOPATH mode), Ruby's mysql2, Node.js; Connector/C headers
# for the Python drivers built from source (mysqlclient, mariadb).
command -v php >/dev/null 2>&1 || need+=(php-cli)
php -m 2>/dev/null | grep -qx mysqli || need+=(php-mysql)
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/go-sql-driver/mysql ] || need+=(golang-github-go-sql-driver-mysql-dev)
ruby -e 'require "mysql2"' >/dev/null 2>&1 || need+=(ruby-mysql2)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
python3 -c 'import MySQLdb, mariadb' 2>/dev/null || { command -v mariadb_config >/dev/null 2>&1 || need+=(libmariadb-dev); command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config); command -v gcc >/dev/null 2>&1 || need+=(gcc); }
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
python3 -c 'import pymysql, pytest, mysql.connector' 2>/dev/null || python3 -m pip install -q pymysql pytest mysql-connector-python
python3 -c 'import MySQLdb, mariadb' 2>/dev/null || python3 -m pip install -q mysqlclient mariadb
# Node.js mysql2, at the version the lock file names.
node=$(dirname "$0")/../tests/clients/node
[ -d "$node/node_modules/mysql2" ] || (cd "$node" && npm ci --no-audit --no-fund --loglevel=error)
