"""Loopback TCP ports of this host's namespace, reachable inside others.

An agent without CAP_SYS_ADMIN cannot setns, so the lab starts it inside
its SE's namespace, where 127.0.0.1 is the SE's own loopback.  This relay
listens on 127.0.0.1:<port> in each given namespace and forwards every
connection to 127.0.0.1:<port> of the namespace it was started in (the
machine's RabbitMQ and Redis), so the agents keep their URLs.

    python -m tools.lab.nsrelay --port 5672 --port 6379 NS [NS ...]

prints READY once listening; stops on SIGTERM.  It runs as root (the lab's
harness), never as the agent.
"""

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys

CLONE_NEWNET = 0x40000000


def _setns(fd):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def listen_in(namespaces, ports):
    """Listening sockets on 127.0.0.1:port inside each namespace; the
    caller's thread is back in its own namespace on return (a socket
    stays in the namespace it was created in)."""
    sockets = []
    home = os.open('/proc/self/ns/net', os.O_RDONLY)
    try:
        for ns in namespaces:
            fd = os.open(os.path.join('/run/netns', ns), os.O_RDONLY)
            try:
                _setns(fd)
                for port in ports:
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(('127.0.0.1', port))
                    s.listen(64)
                    s.setblocking(False)
                    sockets.append((port, s))
            finally:
                _setns(home)
                os.close(fd)
    finally:
        os.close(home)
    return sockets


async def _pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _serve(sockets):
    async def handler(port, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(
                '127.0.0.1', port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer),
                             _pipe(up_reader, writer))

    servers = []
    for port, sock in sockets:
        servers.append(await asyncio.start_server(
            lambda r, w, port=port: handler(port, r, w), sock=sock))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print('READY', flush=True)
    await stop.wait()
    for server in servers:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--port', type=int, action='append', required=True)
    parser.add_argument('namespaces', nargs='+')
    args = parser.parse_args(argv)
    asyncio.run(_serve(listen_in(args.namespaces, args.port)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
