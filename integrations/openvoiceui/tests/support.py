"""Shared helpers for the plugin tests: plugin loading, scripted HTTP servers,
the real gateway-host process, and a bounded turn runner.

Everything is bounded: every wait has a timeout, held responses are released
on teardown, and processes are killed if they do not stop.
"""

import importlib.util
import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
PLUGIN_DIR = TESTS_DIR.parent
REPO_ROOT = PLUGIN_DIR.parent.parent
# OpenVoiceUI's real data (MIT), carried by the repository.
OPENVOICEUI_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "openvoiceui"

WAIT = 30.0  # upper bound for any single wait in the tests

# The plugin logs each failed turn as a warning; the failure tests cause many on purpose.
logging.getLogger("plugins").addHandler(logging.NullHandler())

if str(TESTS_DIR) not in sys.path:  # the stand-in services.gateways.base
    sys.path.insert(0, str(TESTS_DIR))

_PLUGIN_CLASS = None


def load_plugin_class():
    """Load gateway.py the way OpenVoiceUI's GatewayManager does and return the class."""
    global _PLUGIN_CLASS
    if _PLUGIN_CLASS is not None:
        return _PLUGIN_CLASS
    from services.gateways.base import GatewayBase

    manifest = json.loads((PLUGIN_DIR / "plugin.json").read_text())
    name = f"plugins.{PLUGIN_DIR.name}.gateway"
    spec = importlib.util.spec_from_file_location(name, PLUGIN_DIR / "gateway.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    cls = getattr(module, manifest.get("gateway_class", "Gateway"))
    if not (isinstance(cls, type) and issubclass(cls, GatewayBase)):
        raise AssertionError("plugin class does not subclass services.gateways.base.GatewayBase")
    _PLUGIN_CLASS = cls
    return cls


class PluginOnHost:
    """Mixin for test cases with a ``self.host`` (anything with a ``url``): ``self.gateway()``
    is the plugin aimed at that host with no profile, no token and every timeout at WAIT,
    each overridable by keyword."""

    def gateway(self, **kwargs):
        kwargs.setdefault("url", self.host.url)
        kwargs.setdefault("profile", "")
        kwargs.setdefault("token", "")
        kwargs.setdefault("read_timeout", WAIT)
        kwargs.setdefault("turn_timeout", WAIT)
        return load_plugin_class()(**kwargs)


# ---------------------------------------------------------------------- #
# Running a turn                                                          #
# ---------------------------------------------------------------------- #

FINAL = ("text_done", "error")


class TurnRunner:
    """Runs gateway.stream_to_queue on a thread, like OpenVoiceUI does."""

    def __init__(self, gateway, message, session_key, captured_actions=None, **kwargs):
        self.q = queue.Queue()
        self.captured = captured_actions
        self.raised = None
        self.events = []

        def target():
            try:
                gateway.stream_to_queue(self.q, message, session_key, captured_actions, **kwargs)
            except BaseException as exc:  # the plugin must never raise
                self.raised = exc

        self.thread = threading.Thread(target=target, daemon=True, name="stream_to_queue")
        self.thread.start()

    def next_event(self, timeout=WAIT):
        try:
            event = self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout} s; got so far: {self.events}") from None
        self.events.append(event)
        return event

    def finish(self, timeout=WAIT):
        """Collect events up to the final one; check nothing follows and nothing raised."""
        while not (self.events and self.events[-1].get("type") in FINAL):
            self.next_event(timeout)
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError("stream_to_queue did not return after its final event")
        if self.raised is not None:
            raise AssertionError(f"stream_to_queue raised {self.raised!r}")
        extra = []
        while not self.q.empty():
            extra.append(self.q.get_nowait())
        if extra:
            raise AssertionError(f"events after the final one: {extra}")
        return self.events


def run_turn(gateway, message="hello", session_key="s1", captured_actions=None, **kwargs):
    return TurnRunner(gateway, message, session_key, captured_actions, **kwargs).finish()


def finals(events):
    return [e for e in events if e.get("type") in FINAL]


# ---------------------------------------------------------------------- #
# Scripted HTTP server (stand-in host and mock OpenAI-compatible upstream) #
# ---------------------------------------------------------------------- #


class Request:
    def __init__(self, method, path, headers, body):
        self.method, self.path, self.headers, self.body = method, path, headers, body

    def json(self):
        return json.loads(self.body.decode("utf-8"))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):  # keep test output clean
        pass

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Request(self.command, self.path, dict(self.headers.items()), body)
        server = self.server
        with server.lock:
            server.requests.append(req)
        try:
            pieces = server.responder(req)
            for piece in pieces:
                if isinstance(piece, threading.Event):
                    piece.wait(WAIT)  # held until the test releases it (or teardown)
                    continue
                self.wfile.write(piece)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    do_GET = do_POST = do_DELETE = _handle


class ScriptedServer(ThreadingHTTPServer):
    """HTTP server on 127.0.0.1:0 whose responses are raw byte pieces from
    ``responder(request)``; a threading.Event piece holds the response until set."""

    daemon_threads = True

    def __init__(self, responder):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.responder = responder
        self.requests = []
        self.lock = threading.Lock()
        self.holds = []
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="scripted-server")
        self._thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def hold(self):
        event = threading.Event()
        self.holds.append(event)
        return event

    def requests_to(self, path):
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def stop(self):
        for event in self.holds:
            event.set()
        self.shutdown()
        self.server_close()
        self._thread.join(WAIT)


def http_head(status=200, reason="OK", content_type="application/x-ndjson", extra=()):
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}", "Connection: close"]
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def ndjson(*events):
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


# OpenAI-compatible SSE

def sse_chunk(content=None, finish=None):
    delta = {} if content is None else {"content": content}
    chunk = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1,
             "model": "mock-model",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def sse_tool_calls(text, calls):
    """Pieces of a streamed chat completion that asks for tool calls, as OpenAI sends it:
    ``calls`` are (id, name, arguments text)."""
    pieces = [http_head(content_type="text/event-stream"), sse_chunk("")]
    if text:
        pieces.append(sse_chunk(text))
    for index, (call_id, name, arguments) in enumerate(calls):
        for delta in ({"index": index, "id": call_id, "type": "function",
                       "function": {"name": name, "arguments": ""}},
                      {"index": index, "function": {"arguments": arguments}}):
            chunk = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1,
                     "model": "mock-model",
                     "choices": [{"index": 0, "delta": {"tool_calls": [delta]},
                                  "finish_reason": None}]}
            pieces.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    pieces.append(sse_chunk(None, "tool_calls"))
    pieces.append(b"data: [DONE]\n\n")
    return pieces


def sse_answer(tokens, hold=None):
    """Pieces of a streamed chat completion; with ``hold``, pause after the first token."""
    pieces = [http_head(content_type="text/event-stream")]
    pieces.append(sse_chunk(""))  # role-only style first chunk, as OpenAI sends
    for i, token in enumerate(tokens):
        pieces.append(sse_chunk(token))
        if i == 0 and hold is not None:
            pieces.append(hold)
    pieces.append(sse_chunk(None, "stop"))
    pieces.append(b"data: [DONE]\n\n")
    return pieces


def chat_messages(request):
    return request.json().get("messages", [])


# ---------------------------------------------------------------------- #
# The real gateway-host                                                   #
# ---------------------------------------------------------------------- #

LISTEN_RE = re.compile(r"gateway-host listening on (http://\S+)")

TEST_PROFILE = {
    "id": "ovui-test",
    "name": "OpenVoiceUI plugin test",
    "adapter": "clawdbot",
    "adapter_config": {"gateway_id": "openai-compat", "sessionKey": "ovui-test-1"},
    "system_prompt": "PROFILE-PROMPT-MARKER: answer briefly.",
}
VOICE_PROMPT = "# comment line, stripped by the host\nVOICE-PROMPT-MARKER: speak plainly.\n"


def host_binary():
    path = os.environ.get("GATEWAY_HOST_BIN", "").strip()
    if not path:
        raise RuntimeError(
            "GATEWAY_HOST_BIN is not set. The real-host tests need the gateway-host binary: "
            "run them through `cargo test -p gateway-host --test openvoiceui_plugin`, or build it "
            "(`cargo build -p gateway-host`) and set GATEWAY_HOST_BIN=<repo>/target/debug/gateway-host. "
            "To run only the stand-in tests: "
            "python3 -m unittest discover -s integrations/openvoiceui/tests -p 'test_standin*.py'")
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise RuntimeError(f"GATEWAY_HOST_BIN={path!r} is not an executable file")
    return path


class HostProcess:
    """``gateway-host serve --bind 127.0.0.1:0`` with temp profiles/prompts and the
    openai-compat backend pointed at ``upstream_url``."""

    def __init__(self, upstream_url, use_openvoiceui_default=True, gateway_toml=None,
                 extra_profiles=()):
        self.tmp = tempfile.mkdtemp(prefix="ovui-plugin-host-")
        profiles = Path(self.tmp, "profiles")
        prompts = Path(self.tmp, "prompts")
        profiles.mkdir()
        prompts.mkdir()
        (profiles / "ovui-test.json").write_text(json.dumps(TEST_PROFILE))
        for profile in extra_profiles:
            (profiles / f"{profile['id']}.json").write_text(json.dumps(profile))
        if gateway_toml is not None:  # read from the working directory
            Path(self.tmp, "gateway.toml").write_text(gateway_toml)
        real_default = OPENVOICEUI_FIXTURES / "profiles" / "default.json"
        if use_openvoiceui_default:
            # OpenVoiceUI's own default profile, unchanged: the host must serve it as is.
            shutil.copy(real_default, profiles / "default.json")
            self.default_system_prompt = json.loads(real_default.read_text())["system_prompt"]
        else:
            default = dict(TEST_PROFILE, id="default")
            (profiles / "default.json").write_text(json.dumps(default))
            self.default_system_prompt = default["system_prompt"]
        (prompts / "voice-system-prompt.md").write_text(VOICE_PROMPT)

        env = {k: v for k, v in os.environ.items()
               if not (k.upper().endswith("_PROXY") or k.startswith(("GATEWAY_", "OPENAI_")))}
        env.update({
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
            "GATEWAY_PROFILES_DIR": str(profiles),
            "GATEWAY_PROMPTS_DIR": str(prompts),
            "GATEWAY_DEFAULT_PROFILE": "default",
            "OPENAI_COMPAT_BASE_URL": upstream_url + "/v1",
            "OPENAI_COMPAT_API_KEY": "test-key-not-secret",
            "OPENAI_COMPAT_MODEL": "mock-model",
        })
        env.setdefault("RUST_LOG", "info")
        self.stderr_path = Path(self.tmp, "host-stderr.log")
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [host_binary(), "serve", "--bind", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
            cwd=self.tmp, env=env)
        lines = queue.Queue()

        def read_first_line():
            lines.put(self.proc.stdout.readline().decode("utf-8", "replace"))

        threading.Thread(target=read_first_line, daemon=True).start()
        try:
            first = lines.get(timeout=WAIT)
        except queue.Empty:
            self._fail(f"gateway-host printed no listening line within {WAIT} s")
        match = LISTEN_RE.search(first)
        if not match and not first:
            try:
                code = self.proc.wait(5)
            except subprocess.TimeoutExpired:
                code = None
            self._fail(f"gateway-host closed stdout without a listening line (exit status {code})")
        if not match:
            self._fail(f"unexpected first stdout line {first!r} from gateway-host")
        self.url = match.group(1).rstrip("/")

    def _fail(self, why):
        self.stop(keep_logs=True)
        logs = self.logs()
        shutil.rmtree(self.tmp, ignore_errors=True)
        raise RuntimeError(f"{why}\n{logs}")

    def logs(self):
        try:
            return "--- gateway-host stderr ---\n" + self.stderr_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(WAIT)

    def stop(self, keep_logs=False):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._stderr.close()
        if not keep_logs:
            shutil.rmtree(self.tmp, ignore_errors=True)


def direct_ndjson(host_url, body, timeout=WAIT):
    """POST /v1/conversation straight to the host; return (status, events)."""
    import http.client
    import urllib.parse
    p = urllib.parse.urlsplit(host_url)
    conn = http.client.HTTPConnection(p.hostname, p.port, timeout=timeout)
    try:
        conn.request("POST", "/v1/conversation", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json", "Accept": "application/x-ndjson"})
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status != 200:
            return resp.status, [json.loads(raw or b"{}")]
        return resp.status, [json.loads(line) for line in raw.splitlines() if line.strip()]
    finally:
        conn.close()


def unused_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
