"""Helpers for the OpenAI SDK tests: a scripted OpenAI-compatible upstream on 127.0.0.1:0
(standard library only) and the real gateway-host binary in front of it.

Every wait is bounded; processes are stopped (then killed) on teardown.
"""

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

WAIT = 30.0  # upper bound for any single wait
API_KEY = "sk-upstream-SECRET-4c3b2a19"  # what the host sends upstream; must never leak

# The SDK reads proxy settings from the environment: loopback must never go through one.
for _name in ("NO_PROXY", "no_proxy"):
    os.environ[_name] = ",".join(filter(None, [os.environ.get(_name), "127.0.0.1", "localhost"]))


# --------------------------------------------------------------------------------------- #
# Mock upstream                                                                            #
# --------------------------------------------------------------------------------------- #


def chunk(delta, finish=None, usage=None, choices=True):
    body = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": 1,
            "model": "upstream-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else []}
    if usage is not None:
        body["usage"] = usage
    return b"data: " + json.dumps(body).encode() + b"\n\n"


USAGE = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}


def answer(tokens, usage=None):
    """(status, content type, body) of a streamed answer as OpenAI sends it."""
    body = chunk({"role": "assistant", "content": ""})
    body += b"".join(chunk({"content": t}) for t in tokens)
    body += chunk({}, "stop")
    if usage is not None:
        body += chunk(None, usage=usage, choices=False)
    body += b"data: [DONE]\n\n"
    return 200, "text/event-stream", body


def replay(sse_bytes):
    """(status, content type, body) replaying a recorded upstream stream byte for byte."""
    return 200, "text/event-stream", sse_bytes


def error(status, message):
    """(status, content type, body) of a provider error response."""
    body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return status, "application/json", json.dumps(body).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep the test report clean
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        server = self.server
        with server.lock:
            server.requests.append({"path": self.path, "headers": dict(self.headers.items()),
                                    "body": body})
            status, content_type, payload = (server.script.pop(0) if server.script
                                             else answer(["Hello", " there", "."]))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        payload = json.dumps({"object": "list", "data": [{"id": "upstream-model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class MockUpstream(ThreadingHTTPServer):
    """An OpenAI-compatible /v1/chat/completions that answers from a script (default: a
    three-token answer) and records every request."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests = []
        self.script = []
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="mock-upstream")
        self._thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def push(self, reply):
        with self.lock:
            self.script.append(reply)

    def last_body(self):
        with self.lock:
            return self.requests[-1]["body"]

    def stop(self):
        self.shutdown()
        self.server_close()
        self._thread.join(WAIT)


# --------------------------------------------------------------------------------------- #
# Tool-call fixtures                                                                       #
# --------------------------------------------------------------------------------------- #

REPO = Path(__file__).resolve().parents[2]


def tool_fixture_dirs():
    """The tool-call conformance pairs: the repository's copy, then the shared data folder's
    (`$GATEWAY_SHARED_DIR`, else the folder beside the repository) when it exists."""
    dirs = [REPO / "gateway-openai-compat" / "tests" / "conformance-tools"]
    shared = Path(os.environ.get("GATEWAY_SHARED_DIR") or REPO.parent / "shared")
    if (shared / "conformance-tools").is_dir():
        dirs.append(shared / "conformance-tools")
    return dirs


def tool_fixtures():
    """Every (name, .sse bytes, .json expectations) pair, folder by folder, sorted by name."""
    pairs = []
    for folder in tool_fixture_dirs():
        for sse in sorted(folder.glob("*.sse")):
            meta = json.loads(sse.with_suffix(".json").read_text())
            pairs.append((f"{folder.parent.name}/{folder.name}/{sse.stem}", sse.read_bytes(), meta))
    return pairs


# --------------------------------------------------------------------------------------- #
# The real gateway-host                                                                    #
# --------------------------------------------------------------------------------------- #

LISTEN_RE = re.compile(r"gateway-host listening on (http://\S+)")


def host_binary():
    path = os.environ.get("GATEWAY_HOST_BIN", "").strip()
    if not path:
        raise RuntimeError(
            "GATEWAY_HOST_BIN is not set: run these tests through "
            "`cargo test -p gateway-host --test openai_sdk`, or build the binary "
            "(`cargo build -p gateway-host`) and set GATEWAY_HOST_BIN=<repo>/target/debug/gateway-host")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise RuntimeError(f"GATEWAY_HOST_BIN={path!r} is not an executable file")
    return path


class HostProcess:
    """`gateway-host serve --bind 127.0.0.1:0` with the given profiles and voice prompt, its
    `openai-compat` gateway pointed at ``upstream_url``."""

    def __init__(self, upstream_url, profiles, voice_prompt):
        self.tmp = tempfile.mkdtemp(prefix="openai-sdk-host-")
        profiles_dir = Path(self.tmp, "profiles")
        prompts_dir = Path(self.tmp, "prompts")
        profiles_dir.mkdir()
        prompts_dir.mkdir()
        for profile in profiles:
            (profiles_dir / f"{profile['id']}.json").write_text(json.dumps(profile))
        (prompts_dir / "voice-system-prompt.md").write_text(voice_prompt)
        env = {k: v for k, v in os.environ.items()
               if not (k.upper().endswith("_PROXY") or k.startswith(("GATEWAY_", "OPENAI_")))}
        env.update({
            "GATEWAY_PROFILES_DIR": str(profiles_dir),
            "GATEWAY_PROMPTS_DIR": str(prompts_dir),
            "OPENAI_COMPAT_BASE_URL": upstream_url,
            "OPENAI_COMPAT_API_KEY": API_KEY,
            "RUST_LOG": "info",
        })
        self.stderr_path = Path(self.tmp, "host-stderr.log")
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([host_binary(), "serve", "--bind", "127.0.0.1:0"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._stderr, cwd=self.tmp, env=env)
        lines = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline().decode()),
                         daemon=True).start()
        try:
            first = lines.get(timeout=WAIT)
        except queue.Empty:
            first = ""
        match = LISTEN_RE.search(first)
        if not match:
            self.stop(keep=True)
            raise RuntimeError(f"gateway-host did not report its address (first line {first!r})\n"
                               + self.logs())
        self.url = match.group(1).rstrip("/")

    def logs(self):
        try:
            return "--- gateway-host stderr ---\n" + self.stderr_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def stop(self, keep=False):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT)
        self.proc.stdout.close()
        self._stderr.close()
        if not keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
