"""Make sure the machine's shared services answer: MariaDB, Redis, RabbitMQ.

Each ``ensure_*`` checks the service with a real protocol exchange, starts it
only if it does not answer, then polls with a deadline.  A service that was
already answering is never touched, and nothing here ever stops a service.

    from tools.lab.localstack import services
    services.ensure("mariadb", "rabbitmq")        # raises ServiceError

Command line (used by tools/install-deps.sh):

    python -m tools.lab.localstack.services [--timeout S] \
        [mariadb] [redis] [rabbitmq]

Only the standard library is used, so this runs before any pip install.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time

HOST = "127.0.0.1"
PORTS = {"mariadb": 3306, "redis": 6379, "rabbitmq": 5672}
# Default deadlines (seconds) from the start command to an answer.
# RabbitMQ needs 5-11 s on these machines.
DEADLINES = {"mariadb": 30.0, "redis": 10.0, "rabbitmq": 60.0}


class ServiceError(RuntimeError):
    pass


def _log(msg):
    print(f"[localstack.services] {msg}", file=sys.stderr, flush=True)


def _exchange(port, payload, nbytes=64, timeout=1.0):
    """Connect, send payload (may be empty), return the first bytes read."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        if payload:
            s.sendall(payload)
        return s.recv(nbytes)


def mariadb_answers(port=None):
    # The server speaks first: a handshake packet whose 5th byte is the
    # protocol version 10 (0xff there is an error packet, e.g. "too many
    # connections" or "host blocked").
    try:
        data = _exchange(port or PORTS["mariadb"], b"", nbytes=16)
    except OSError:
        return False
    return len(data) > 4 and data[4] == 10


def redis_answers(port=None):
    try:
        return _exchange(port or PORTS["redis"],
                         b"PING\r\n").startswith(b"+PONG")
    except OSError:
        return False


def rabbitmq_answers(port=None):
    # AMQP 0-9-1 protocol header; a ready broker answers with a
    # Connection.Start method frame (type 1, channel 0).
    try:
        data = _exchange(port or PORTS["rabbitmq"], b"AMQP\x00\x00\x09\x01")
    except OSError:
        return False
    return data[:3] == b"\x01\x00\x00"


CHECKS = {"mariadb": mariadb_answers, "redis": redis_answers,
          "rabbitmq": rabbitmq_answers}


def _start_mariadb():
    # /run is a tmpfs: the socket/pid folder may be gone after a reboot.
    os.makedirs("/run/mysqld", exist_ok=True)
    if shutil.which("chown"):
        subprocess.run(["chown", "mysql:mysql", "/run/mysqld"], check=False)
    return ["start-stop-daemon", "--start", "--oknodo", "--background",
            "--exec", "/usr/sbin/mariadbd"]


def _start_redis():
    os.makedirs("/var/lib/redis", exist_ok=True)
    os.makedirs("/var/log/redis", exist_ok=True)
    return ["redis-server", "--daemonize", "yes",
            "--bind", "127.0.0.1", "-::1", "--port", "6379",
            "--save", "", "--appendonly", "no",
            "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log"]


def _start_rabbitmq():
    return ["rabbitmq-server", "-detached"]


STARTERS = {"mariadb": (_start_mariadb, "/usr/sbin/mariadbd"),
            "redis": (_start_redis, "redis-server"),
            "rabbitmq": (_start_rabbitmq, "rabbitmq-server")}


def ensure_one(name, timeout=None):
    """Return 'running' if it answered, 'started' if we had to start it."""
    check = CHECKS[name]
    if check():
        return "running"
    make_cmd, binary = STARTERS[name]
    if not shutil.which(binary):
        raise ServiceError(f"{name} does not answer on {HOST}:{PORTS[name]} "
                           f"and {binary} is not installed")
    cmd = make_cmd()
    _log(f"{name} does not answer; starting: {' '.join(cmd)}")
    # Detached daemons: no pipes kept open, so a daemon that inherits them
    # cannot hold up our caller.
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=60, check=False)
    if proc.returncode != 0:
        raise ServiceError(f"starting {name} failed (rc {proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    deadline = time.monotonic() + (timeout or DEADLINES[name])
    delay = 0.05
    while time.monotonic() < deadline:
        if check():
            _log(f"{name} answers")
            return "started"
        time.sleep(delay)   # polling interval, not synchronisation
        delay = min(delay * 2, 0.5)
    raise ServiceError(f"{name} did not answer on {HOST}:{PORTS[name]} "
                       f"within {timeout or DEADLINES[name]:.0f} s of "
                       "starting")


def ensure(*names, timeout=None):
    """Ensure every named service answers; {name: 'running'|'started'}."""
    return {n: ensure_one(n, timeout) for n in (names or tuple(CHECKS))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for each service after starting it")
    p.add_argument("services", nargs="*", metavar="SERVICE",
                   help=f"any of {', '.join(CHECKS)} (default: all)")
    args = p.parse_args(argv)
    unknown = set(args.services) - set(CHECKS)
    if unknown:
        p.error(f"unknown service(s): {', '.join(sorted(unknown))}")
    failed = False
    for name in args.services or list(CHECKS):
        try:
            _log(f"{name}: {ensure_one(name, args.timeout)}")
        except ServiceError as e:
            _log(f"ERROR: {e}")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
