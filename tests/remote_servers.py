"""Real servers on loopback for the remote-source tests: nginx serving a
folder (its access log says what was sent), a fault proxy in front of it,
and moto's S3 server. Each is started by a fixture and stopped after it; all
listen on 127.0.0.1 only and every wait is bounded."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Optional

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: Optional[subprocess.Popen], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


class Nginx:
    """nginx serving ``root`` at ``url``; ``log()`` is the access log's
    entries since the last ``clear()``: (method, uri, status, bytes sent,
    Range header)."""

    def __init__(self, root: str, work: str, workers: int = 1):
        self.root = root
        self.work = work
        self.workers = workers
        self.proc: Optional[subprocess.Popen] = None
        for _ in range(3):  # a port taken between choosing and binding: try another
            self.port = free_port()
            conf = os.path.join(work, "nginx.conf")
            with open(conf, "w") as fh:
                fh.write(self._config())
            self.proc = subprocess.Popen([NGINX, "-c", conf, "-p", work], stdout=subprocess.DEVNULL,
                                         stderr=open(os.path.join(work, "stderr.log"), "w"))
            try:
                wait_listening(self.port, self.proc)
                break
            except RuntimeError:
                self.stop()
        else:
            with open(os.path.join(work, "stderr.log")) as fh:
                raise RuntimeError("nginx did not start: " + fh.read())
        self.url = f"http://127.0.0.1:{self.port}"

    def _config(self) -> str:
        w = self.work
        return f"""
daemon off;
master_process {"off" if self.workers == 1 else "on"};
worker_processes {self.workers};
pid {w}/nginx.pid;
error_log {w}/error.log warn;
events {{ worker_connections 512; }}
http {{
    log_format fastensors '$request_method $uri $status $body_bytes_sent "$http_range"';
    access_log {w}/access.log fastensors;
    client_body_temp_path {w}/client; proxy_temp_path {w}/proxy; fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi; scgi_temp_path {w}/scgi;
    keepalive_requests 100000;
    sendfile on;
    server {{
        listen 127.0.0.1:{self.port};
        root {self.root};
        location / {{ }}
        # /redirect/X answers 302 to /X, as the Hugging Face Hub sends downloads to its CDN
        location /redirect/ {{ rewrite ^/redirect/(.*)$ /$1 redirect; }}
    }}
}}
"""

    def log(self) -> List[tuple]:
        path = os.path.join(self.work, "access.log")
        time.sleep(0.05)  # nginx writes the entry as the response ends
        if not os.path.exists(path):
            return []
        out = []
        with open(path) as fh:
            for line in fh:
                method, uri, status, sent, rng = line.rstrip("\n").split(" ", 4)
                out.append((method, uri, int(status), int(sent), rng.strip('"')))
        return out

    def clear(self) -> None:
        path = os.path.join(self.work, "access.log")
        if os.path.exists(path):
            with open(path, "w"):
                pass

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


class FaultProxy:
    """An HTTP proxy on loopback in front of ``upstream`` (host:port) that
    misbehaves on purpose. ``fault`` is one of: None, "drop" (close the
    connection after half the body), "stall" (wait ``stall_s`` before the
    body), "ignore-range" (send the whole object, 200), "short" (one byte
    fewer than the Content-Range says, then close), "long" (one byte more
    than asked, Content-Length matching), "5xx" (503), "drip" (the body a
    byte every 0.2 s, each gap shorter than a socket timeout). It applies to the
    first ``times`` GET requests with a Range (then the proxy is honest);
    ``seen`` counts the GETs."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.fault: Optional[str] = None
        self.times = 0
        self.stall_s = 2.0
        self.seen = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self, method):
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                fault = None
                if method == "GET" and "Range" in self.headers:
                    with proxy._lock:
                        proxy.seen += 1
                        if proxy.fault and proxy.times > 0:
                            proxy.times -= 1
                            fault = proxy.fault
                if fault == "ignore-range":
                    headers.pop("Range", None)
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                try:
                    conn.request(method, self.path, headers=headers)
                    r = conn.getresponse()
                    body = r.read()
                    status, rh = r.status, r.getheaders()
                finally:
                    conn.close()
                if fault == "5xx":
                    status, body, rh = 503, b"busy", []
                if fault == "long" and status == 206:
                    body = body + b"\0"
                self.send_response(status)
                for k, v in rh:
                    if k.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body) if method == "GET" else
                                                       dict((k.lower(), v) for k, v in rh).get("content-length", 0)))
                if fault in ("drop", "short"):
                    self.send_header("Connection", "close")
                self.end_headers()
                if method == "HEAD":
                    return
                if fault == "stall":
                    time.sleep(proxy.stall_s)
                if fault == "drop":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "drip":
                    for i in range(len(body)):
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        time.sleep(0.2)
                    return
                if fault == "short":
                    self.wfile.write(body[:-1])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

            def do_GET(self):
                self._forward("GET")

            def do_HEAD(self):
                self._forward("HEAD")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def set(self, fault: Optional[str], times: int = 1, stall_s: float = 2.0) -> None:
        with self._lock:
            self.fault, self.times, self.stall_s, self.seen = fault, times, stall_s, 0

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)


class MotoS3:
    """moto's standalone S3 server (``python -m moto.server``) on loopback."""

    def __init__(self, work: str):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "moto.log"), "w"))
        try:
            wait_listening(self.port, self.proc, timeout=60)
        except RuntimeError:
            self.stop()
            raise
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def storage_options(self) -> dict:
        return {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": self.endpoint,
                                                                          "region_name": "us-east-1"}}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
