#!/usr/bin/env bash
# Makes sure PostgreSQL and MariaDB answer on loopback for the billing-import
# tests, starting them when they are installed but stopped, and creates the
# test login announcer_test (password announcer_test) in each. The tests make
# and drop a database of their own; nothing else is touched.
set -euo pipefail

wait_for() {  # wait_for LABEL COMMAND...
    local label=$1
    shift
    for _ in $(seq 1 60); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    echo "$label did not start; the billing tests will fail" >&2
    return 1
}

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "== starting PostgreSQL"
    for version in /etc/postgresql/*/; do
        pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main start || true
    done
    wait_for PostgreSQL pg_isready -q -h 127.0.0.1 -p 5432
fi
runuser -u postgres -- psql -qtAX -c "
    DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'announcer_test') THEN
        CREATE ROLE announcer_test LOGIN SUPERUSER PASSWORD 'announcer_test';
      END IF;
    END \$\$;" >/dev/null

if ! mariadb-admin ping -h 127.0.0.1 --silent >/dev/null 2>&1; then
    echo "== starting MariaDB"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    service mariadb start >/dev/null 2>&1 ||
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
    wait_for MariaDB mariadb-admin ping -h 127.0.0.1 --silent
fi
mariadb -e "
    CREATE USER IF NOT EXISTS 'announcer_test'@'127.0.0.1' IDENTIFIED BY 'announcer_test';
    CREATE USER IF NOT EXISTS 'announcer_test'@'localhost' IDENTIFIED BY 'announcer_test';
    GRANT ALL PRIVILEGES ON *.* TO 'announcer_test'@'127.0.0.1';
    GRANT ALL PRIVILEGES ON *.* TO 'announcer_test'@'localhost';"
