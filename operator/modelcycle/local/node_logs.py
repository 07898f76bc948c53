"""The one piece of the kubelet API the local node serves: container logs, so `kubectl logs` works.

The API server proxies `kubectl logs` to https://<node InternalIP>:<kubeletEndpoint port>/
containerLogs/<namespace>/<pod>/<container>, presenting its kubelet-client certificate. This
server listens on 127.0.0.1 with a self-signed certificate (the API server does not verify a
kubelet's serving certificate unless told to) and, when the kubeconfig names the cluster's CA,
accepts only clients with a certificate that CA signed.

Supported query parameters: follow, previous, tailLines, limitBytes. timestamps and sinceSeconds
are ignored (the log files hold no per-line times).
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import json
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from modelcycle.local import controlplane as cp

log = logging.getLogger("modelcycle.local.node")

FOLLOW_POLL_SECONDS = 0.25


def self_signed(directory: Path, *, host: str) -> tuple[Path, Path]:
    """A serving certificate for `host` (written to directory/serving.{crt,key})."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelcycle-local-node")])
    alt_names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(host))]
    serving = cp.Certificate(
        cp.certificate_builder(name, name, key)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .sign(key, hashes.SHA256()),
        key,
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "serving.crt", directory / "serving.key"
    cert_path.write_bytes(serving.cert_pem)
    key_path.touch(mode=0o600)
    key_path.write_bytes(serving.key_pem)
    return cert_path, key_path


def log_files(logs_root: Path, namespace: str, pod: str, container: str) -> list[Path]:
    """The container's log files (one per start), oldest first, of the pod's newest incarnation."""
    pod_dirs = [d for d in logs_root.glob(f"{glob_escape(namespace)}_{glob_escape(pod)}_*") if d.is_dir()]
    # A name may have been reused by a newer pod (a new uid): the most recently written one wins.
    pod_dirs = [d for d in pod_dirs if d.name.rsplit("_", 1)[0] == f"{namespace}_{pod}"]
    if not pod_dirs:
        return []
    newest = max(pod_dirs, key=lambda d: max((f.stat().st_mtime for f in d.rglob("*.log")), default=0.0))
    files = [f for f in (newest / container).glob("*.log") if f.stem.isdigit()]
    return sorted(files, key=lambda f: int(f.stem))


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def tail_lines(data: bytes, lines: int) -> bytes:
    if lines < 0:
        return data
    if lines == 0:
        return b""
    parts = data.split(b"\n")
    trailing = parts and parts[-1] == b""
    kept = parts[-(lines + 1) :] if trailing else parts[-lines:]
    return b"\n".join(kept)


def run_finished(log_path: Path, pods_root: Path) -> bool:
    """True when the run writing `log_path` has ended (or cannot be found any more)."""
    for run_json in pods_root.glob("*/containers/*/runs/*/run.json"):
        with contextlib.suppress(OSError, ValueError):
            if Path(json.loads(run_json.read_text()).get("log", "")) == log_path:
                return (run_json.parent / "exit.json").exists()
    return True


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("logs server: " + format, *args)

    def _reply(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        if parts == ["healthz"]:
            self._reply(200, "ok")
            return
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._reply(404, "the local node serves only /containerLogs/<namespace>/<pod>/<container>")
            return
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        namespace, pod, container = parts[1:]
        files = log_files(self.server.logs_root, namespace, pod, container)
        previous = query.get("previous", "false").lower() == "true"
        if previous:
            if len(files) < 2:
                self._reply(400, f'previous terminated container "{container}" in pod "{pod}" not found')
                return
            path = files[-2]
        elif files:
            path = files[-1]
        else:
            self._reply(
                404, f'no logs of container "{container}" in pod "{namespace}/{pod}" on this node yet'
            )
            return
        follow = query.get("follow", "false").lower() == "true" and not previous
        limit = int(query["limitBytes"]) if query.get("limitBytes", "").isdigit() else None
        data = path.read_bytes()
        offset = len(data)
        if "tailLines" in query and query["tailLines"].lstrip("-").isdigit():
            data = tail_lines(data, int(query["tailLines"]))
        if limit is not None:
            data = data[:limit]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            sent = self._chunk(data)
            if follow:
                for more in self._follow(path, offset=offset):
                    if limit is not None:
                        more = more[: max(0, limit - sent)]
                    sent += self._chunk(more)
                    if limit is not None and sent >= limit:
                        break
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass

    def _chunk(self, data: bytes) -> int:
        if data:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        return len(data)

    def _follow(self, path: Path, *, offset: int) -> Iterator[bytes]:
        pods_root = self.server.pods_root
        while not self.server.stopping.is_set():
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
            offset += len(data)
            if data:
                yield data
                continue
            if run_finished(path, pods_root):
                return
            time.sleep(FOLLOW_POLL_SECONDS)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    logs_root: Path
    pods_root: Path
    stopping: threading.Event


class LogServer:
    """`kubectl logs` for the local node, on 127.0.0.1:port (0: any free port)."""

    def __init__(
        self, *, logs_root: Path, pods_root: Path, tls_dir: Path, client_ca: str | None, port: int = 0
    ) -> None:
        self.host = "127.0.0.1"
        self.server = _Server((self.host, port), _Handler)
        self.server.logs_root = logs_root
        self.server.pods_root = pods_root
        self.server.stopping = threading.Event()
        cert, key = self_signed(tls_dir, host=self.host)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        if client_ca:
            context.load_verify_locations(cafile=client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, name="logs-server", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.stopping.set()
        self.server.shutdown()
        self.server.server_close()
