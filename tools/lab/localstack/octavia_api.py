"""Serve the Octavia API (pecan WSGI app) for the local stack.

Why not `octavia-api` or `octavia.wsgi.api:application`: the former is a
single-threaded wsgiref server on a fixed port; the latter parses sys.argv
(gunicorn's arguments).  This module builds the app with an explicit argv and:

* serves it on a listening socket inherited from the parent (``--fd N``, so
  the parent chose the free port and there is no bind race), or on
  ``--port``;
* with ``--server wsgiref`` (default) a threaded wsgiref server in this
  process; with ``--server gunicorn`` it execs gunicorn (``fd://N``,
  1 gthread worker), which imports ``application`` from this module;
* with ``--default-project-id P`` adds ``X-Project-Id: P`` to requests that
  carry no project (noauth has no token to take it from, and Octavia refuses
  to create objects without a project).  A client's own X-Project-Id wins;
* answers GET /projects[/<id>] (Keystone v3 shape) so that the CLI's
  ``--project X`` options work without Keystone (see with_project_lookup).

Run as a script (``python .../octavia_api.py --config-file ...``); it imports
nothing from this repository.  Its own folder is taken off sys.path first:
tools/lab/localstack/octavia.py would otherwise shadow the `octavia` package.
"""

import argparse
import os
import signal
import socket
from socketserver import ThreadingMixIn
import sys
import threading
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.simple_server import WSGIServer

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path
               if os.path.abspath(p or os.curdir) != _HERE]

ENV_CONF = "OCTAVIA_LOCALSTACK_CONF"
ENV_PROJECT = "OCTAVIA_LOCALSTACK_PROJECT_ID"


def with_default_project(app, project_id):
    if not project_id:
        return app

    def wrapped(environ, start_response):
        if not (environ.get("HTTP_X_PROJECT_ID")
                or environ.get("HTTP_X_TENANT_ID")
                or environ.get("HTTP_X_TENANT")):
            environ["HTTP_X_PROJECT_ID"] = project_id
        return app(environ, start_response)

    return wrapped


def with_project_lookup(app):
    """Answer the CLI's Keystone project look-ups: any id/name exists.

    `openstack loadbalancer ... --project X` makes python-keystoneclient GET
    <OS_ENDPOINT>/projects/X (then /projects?name=X) before it calls Octavia.
    Octavia has no /projects path, so answering here collides with nothing,
    and the CLI then sends project_id X in the body (noauth is admin).
    """
    import json
    from urllib.parse import parse_qs

    def wrapped(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if environ["REQUEST_METHOD"] != "GET" or not (
                path == "/projects" or path.startswith("/projects/")):
            return app(environ, start_response)
        pid = path[len("/projects/"):].strip("/")
        if pid:
            body = {"project": _project(pid)}
        else:
            names = parse_qs(environ.get("QUERY_STRING", "")).get("name", [])
            body = {"projects": [_project(n) for n in names]}
        data = json.dumps(body).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(data)))])
        return [data]

    return wrapped


def _project(pid):
    return {"id": pid, "name": pid, "domain_id": "default", "enabled": True,
            "description": "", "is_domain": False, "parent_id": "default",
            "links": {}}


def build_app(conf_path, default_project_id=None):
    from octavia.api import app as octavia_app
    app = octavia_app.setup_app(
        argv=["octavia-api", "--config-file", conf_path])
    return with_project_lookup(with_default_project(app, default_project_id))


class _Handler(WSGIRequestHandler):
    # One access-log line per request on stderr, like octavia-api.
    def address_string(self):
        return self.client_address[0]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def serve_wsgiref(app, sock):
    server = _ThreadingWSGIServer(sock.getsockname(), _Handler,
                                  bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    host, port = sock.getsockname()[:2]
    server.server_name = host
    server.server_port = port
    server.setup_environ()
    server.set_app(app)

    def _stop(signum, frame):
        # shutdown() blocks until serve_forever() returns: call it from
        # another thread, never from the serving thread's signal handler.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"octavia-api (localstack, wsgiref) serving on {host}:{port}",
          file=sys.stderr, flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()


def exec_gunicorn(args, fd):
    os.environ[ENV_CONF] = os.path.abspath(args.config_file)
    if args.default_project_id:
        os.environ[ENV_PROJECT] = args.default_project_id
    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(_HERE)))
    argv = [sys.executable, "-m", "gunicorn",
            "--bind", f"fd://{fd}", "--workers", "1",
            "--worker-class", "gthread", "--threads", str(args.threads),
            "--graceful-timeout", "5", "--timeout", "120",
            "--pythonpath", repo_root, "--access-logfile", "-",
            "tools.lab.localstack.octavia_api:application"]
    os.execv(sys.executable, argv)


def main(argv=None):
    p = argparse.ArgumentParser(description="Octavia API for the local stack")
    p.add_argument("--config-file", required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--fd", type=int, help="inherited listening socket")
    g.add_argument("--port", type=int, help="bind 127.0.0.1:PORT")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--default-project-id", default=None)
    p.add_argument("--server", choices=("wsgiref", "gunicorn"),
                   default="wsgiref")
    p.add_argument("--threads", type=int, default=4)
    args = p.parse_args(argv)

    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
    else:
        sock = socket.create_server((args.host, args.port), backlog=128)
    if args.server == "gunicorn":
        os.set_inheritable(sock.fileno(), True)
        exec_gunicorn(args, sock.fileno())
    app = build_app(args.config_file, args.default_project_id)
    serve_wsgiref(app, sock)
    return 0


# Under gunicorn (exec_gunicorn above) the worker imports this module.
application = None
if os.environ.get(ENV_CONF) and __name__ != "__main__":
    application = build_app(os.environ[ENV_CONF],
                            os.environ.get(ENV_PROJECT) or None)

if __name__ == "__main__":
    sys.exit(main())
