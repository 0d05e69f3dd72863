"""A local S3 server for the tests and benchmarks: moto's, made to behave
like S3 where the crate's guarantees depend on it, and observable.

    python s3-server.py --port PORT [--exit-with PID]

moto checks a write's precondition (`If-None-Match: *`) and stores the
object in two steps on a threaded server, so two racing creates could both
win. Here every write (PUT, POST, DELETE) runs behind one lock: the first
write to finish wins and the rest get 412, as on S3.

Per bucket, through `POST /_lmt/config/<bucket>?strip_preconditions=1&delay_ms=20`:
- `strip_preconditions`: drop `If-None-Match` / `If-Match` before moto sees
  them, modelling a store that accepts the headers but ignores them;
- `delay_ms`: sleep that long before answering each request, modelling
  object-storage latency.

`GET /_lmt/requests/<bucket>` answers the requests made to a bucket so far,
one `METHOD key` per line (key relative to the bucket; `?list` for
listings, `POST ?delete` for a bulk delete), and `POST /_lmt/reset/<bucket>` forgets them. Buckets are
created on first use, so a test only picks a fresh name.
"""

import argparse
import os
import sys
import threading
import time
from urllib.parse import parse_qs

from werkzeug.serving import make_server

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

WRITES = {"PUT", "POST", "DELETE"}
PRECONDITIONS = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MATCH")


class Harness:
    def __init__(self, app):
        self.app = app
        self.write_lock = threading.Lock()
        self.state_lock = threading.Lock()
        self.config = {}  # bucket -> {"strip": bool, "delay": float}
        self.requests = {}  # bucket -> [str]
        self.buckets = set()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path.startswith("/_lmt/"):
            return self.control(environ, start_response, path[len("/_lmt/"):])
        bucket, _, key = path.lstrip("/").partition("/")
        method = environ["REQUEST_METHOD"]
        if bucket:
            self.ensure_bucket(bucket)
            with self.state_lock:
                config = dict(self.config.get(bucket, {}))
                query = environ.get("QUERY_STRING", "")
                what = key or ""
                if "list-type" in query or (not key and method == "GET"):
                    what += "?list"
                elif "delete" in query and method == "POST":
                    what += "?delete"
                self.requests.setdefault(bucket, []).append(f"{method} {what}")
            if config.get("delay"):
                time.sleep(config["delay"])
            if config.get("strip"):
                for header in PRECONDITIONS:
                    environ.pop(header, None)
        if method in WRITES:
            # The whole request, body included: check-and-store is atomic.
            with self.write_lock:
                return list(self.app(environ, start_response))
        return self.app(environ, start_response)

    def ensure_bucket(self, bucket):
        with self.state_lock:
            if bucket in self.buckets:
                return
            self.buckets.add(bucket)
        environ = {
            "REQUEST_METHOD": "PUT",
            "PATH_INFO": "/" + bucket,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": os.environ.get("MOTO_PORT", "5000"),
            "HTTP_HOST": "127.0.0.1:" + os.environ.get("MOTO_PORT", "5000"),
            "wsgi.url_scheme": "http",
            "wsgi.input": __import__("io").BytesIO(b""),
            "CONTENT_LENGTH": "0",
            "HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
        }
        with self.write_lock:
            list(self.app(environ, lambda status, headers, exc_info=None: None))

    def control(self, environ, start_response, command):
        verb, _, bucket = command.partition("/")
        body = b""
        with self.state_lock:
            if verb == "config":
                query = parse_qs(environ.get("QUERY_STRING", ""))
                self.config[bucket] = {
                    "strip": query.get("strip_preconditions", ["0"])[0] == "1",
                    "delay": int(query.get("delay_ms", ["0"])[0]) / 1000.0,
                }
            elif verb == "requests":
                body = "".join(r + "\n" for r in self.requests.get(bucket, [])).encode()
            elif verb == "reset":
                self.requests[bucket] = []
            elif verb == "ping":
                body = b"ok"
            else:
                start_response("404 Not Found", [("Content-Length", "0")])
                return [b""]
        start_response(
            "200 OK",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
        )
        return [body]


def watch(pid):
    """Exits when process `pid` is gone (the test run that started us)."""
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        time.sleep(1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--exit-with", type=int, default=None)
    args = parser.parse_args()
    os.environ["MOTO_PORT"] = str(args.port)
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(args.host, args.port, Harness(app), threaded=True)
    if args.exit_with:
        threading.Thread(target=watch, args=(args.exit_with,), daemon=True).start()
    print(f"listening on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
