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
python3 -c 'import MySQLdb, mariadb' 2>/dev/null || { command -v mariadb_config >/dev/null 2>&1 || need+=(libmariadb-dev); command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config); }
# Python 3 with pip and headers (Debian's, when no other is installed); a C
# compiler (the Rust build and the drivers built from source need one); curl.
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
python3 -c 'import sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' 2>/dev/null || need+=(python3-dev)
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's own python3 refuses pip installs into it (PEP 668) unless told.
pip=(python3 -m pip install -q)
python3 -m pip install --help 2>/dev/null | grep -q -- --break-system-packages && pip+=(--break-system-packages)
python3 -c 'import pymysql, pytest, mysql.connector' 2>/dev/null || "${pip[@]}" pymysql pytest mysql-connector-python
python3 -c 'import MySQLdb, mariadb' 2>/dev/null || "${pip[@]}" mysqlclient mariadb
# Node.js mysql2, at the version the lock file names.
node=$(dirname "$0")/../tests/clients/node
# (Again when the lock file is newer than what was installed from it.)
if [ ! -d "$node/node_modules/mysql2" ] || [ "$node/package-lock.json" -nt "$node/node_modules/.package-lock.json" ]; then
  (cd "$node" && npm ci --no-audit --no-fund --loglevel=error)
fi
# The Rust toolchain comes from rustup (Debian's cargo is too old for this code).
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found: install Rust with rustup (https://rustup.rs), 1.82 or newer" >&2; exit 1; }
