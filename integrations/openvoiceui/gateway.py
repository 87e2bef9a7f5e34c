"""OpenVoiceUI gateway plugin that forwards each voice turn to a gateway-host.

OpenVoiceUI loads this file as ``plugins/<dir>/gateway.py`` and registers the
class named by ``gateway_class`` in ``plugin.json`` (here: ``Gateway``) under
its ``gateway_id``. Every turn becomes one ``POST {GATEWAY_HOST_URL}/v1/conversation``
with ``Accept: application/x-ndjson``; the host answers with OpenVoiceUI's own
event protocol, one JSON event per line, and this plugin copies those events
into OpenVoiceUI's queue in order.

Guarantee: ``stream_to_queue`` never raises and always ends the turn with
exactly one ``text_done`` or ``error`` event, whatever the host does (down,
HTTP error, stall, dropped connection, garbage lines). An empty answer is
passed on as ``text_done`` with ``response: None``, the signal OpenVoiceUI
uses to retry with a fresh session.

Standard library only. Environment (read when the class is instantiated):

  GATEWAY_HOST_URL              base URL of the host (default http://127.0.0.1:8787)
  GATEWAY_HOST_TOKEN            optional bearer token (never logged)
  GATEWAY_HOST_PROFILE          profile id to request (unset: the host's default)
  GATEWAY_HOST_SYSTEM_PROMPT    sent as "system_prompt" (default "none": OpenVoiceUI
                                already inlines its instructions; empty: omit the field
                                so the host adds its own system prompt)
  GATEWAY_HOST_GATEWAY_ID       id this plugin registers under (default "openai-compat";
                                read at import time)
  GATEWAY_HOST_CONNECT_TIMEOUT  seconds to establish the TCP connection (default 3)
  GATEWAY_HOST_READ_TIMEOUT     max seconds of silence between two lines (default 300)
  GATEWAY_HOST_TURN_TIMEOUT     max seconds for a whole turn (default 300, below
                                OpenVoiceUI's 310 s hard limit)
"""

import http.client
import json
import logging
import os
import queue
import socket
import ssl
import time
import urllib.parse
from typing import Optional

try:  # inside OpenVoiceUI
    from services.gateways.base import GatewayBase
except ImportError:  # standalone import (docs, linting, quick manual tests)

    class GatewayBase:  # type: ignore[no-redef]
        """Minimal stand-in with the attributes OpenVoiceUI's base class defines."""

        gateway_id = "unnamed"
        persistent = False
        capabilities = frozenset({"streaming"})

        def is_configured(self) -> bool:
            raise NotImplementedError

        def is_healthy(self) -> bool:
            return self.is_configured()

        def stream_to_queue(self, event_queue, message, session_key,
                            captured_actions=None, **kwargs) -> None:
            raise NotImplementedError

        def shutdown(self) -> None:
            pass


logger = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8787"
DEFAULT_SYSTEM_PROMPT = "none"
DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_READ_TIMEOUT = 300.0
DEFAULT_TURN_TIMEOUT = 300.0
HEALTH_TIMEOUT = 2.0
MAX_LINE_BYTES = 1 << 20       # one event line; a longer line is a protocol error
MAX_ERROR_BODY_BYTES = 64 << 10
USER_AGENT = "openvoiceui-gateway-host-plugin/0.1"

_FINAL_TYPES = ("text_done", "error")
_KNOWN_TYPES = ("handshake", "delta", "action") + _FINAL_TYPES


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        logger.warning("%s=%r is not a number; using %s", name, raw, default)
        return default
    if value <= 0:
        logger.warning("%s=%r must be positive; using %s", name, raw, default)
        return default
    return value


class _TurnError(Exception):
    """A failure that ends the turn with one error event carrying this text."""


class _Turn:
    """Puts events for one turn and guarantees a single final event."""

    def __init__(self, event_queue: queue.Queue, captured_actions):
        self.q = event_queue
        self.captured = captured_actions if isinstance(captured_actions, list) else None
        self.finished = False
        self.deltas = 0

    def put(self, event: dict) -> None:
        if not self.finished:
            self.q.put(event)

    def final(self, event: dict) -> None:
        if self.finished:
            return
        self.finished = True
        self.q.put(event)

    def error(self, text: str) -> None:
        self.final({"type": "error", "error": text})


class Gateway(GatewayBase):
    """Routes OpenVoiceUI turns to a gateway-host over its NDJSON conversation API."""

    gateway_id = os.environ.get("GATEWAY_HOST_GATEWAY_ID", "openai-compat")
    persistent = False
    capabilities = frozenset({"streaming", "sessions", "reset", "tool-events"})

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None,
                 profile: Optional[str] = None, system_prompt: Optional[str] = None,
                 connect_timeout: Optional[float] = None,
                 read_timeout: Optional[float] = None,
                 turn_timeout: Optional[float] = None):
        # OpenVoiceUI instantiates with no arguments: everything comes from the
        # environment. The keyword arguments exist for tests and embedding.
        env = os.environ
        self.url = (url if url is not None else env.get("GATEWAY_HOST_URL", "") or DEFAULT_URL).rstrip("/")
        self._token = token if token is not None else env.get("GATEWAY_HOST_TOKEN", "")
        self.profile = profile if profile is not None else env.get("GATEWAY_HOST_PROFILE", "")
        if system_prompt is None:
            system_prompt = env.get("GATEWAY_HOST_SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT)
        self.system_prompt = system_prompt
        self.connect_timeout = connect_timeout or _env_float(
            "GATEWAY_HOST_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT)
        self.read_timeout = read_timeout or _env_float(
            "GATEWAY_HOST_READ_TIMEOUT", DEFAULT_READ_TIMEOUT)
        self.turn_timeout = turn_timeout or _env_float(
            "GATEWAY_HOST_TURN_TIMEOUT", DEFAULT_TURN_TIMEOUT)
        self._parsed = urllib.parse.urlsplit(self.url)

    def __repr__(self) -> str:  # never shows the token
        return f"<Gateway id={self.gateway_id!r} url={self.url!r}>"

    # ------------------------------------------------------------------ #
    # Configuration and health                                            #
    # ------------------------------------------------------------------ #

    def is_configured(self) -> bool:
        p = self._parsed
        try:
            p.port  # raises ValueError for a bad port
        except ValueError:
            return False
        return p.scheme in ("http", "https") and bool(p.hostname)

    def check_health(self) -> tuple:
        """OpenVoiceUI's health contract: ``(healthy, latency_ms)`` from ``GET {url}/healthz``."""
        report = self.health_report()
        return (report["healthy"], report["latency_ms"])

    def health_report(self) -> dict:
        """Probe ``GET {url}/healthz``: ``{"healthy", "latency_ms"[, "error"]}``."""
        if not self.is_configured():
            return {"healthy": False, "latency_ms": None,
                    "error": f"invalid GATEWAY_HOST_URL {self.url!r}"}
        start = time.monotonic()
        try:
            status, body = self._simple_request("GET", "/healthz", HEALTH_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - health must never raise
            return {"healthy": False, "latency_ms": None,
                    "error": self._describe_connect_error(exc)}
        latency_ms = round((time.monotonic() - start) * 1000.0, 1)
        if status != 200:
            return {"healthy": False, "latency_ms": latency_ms,
                    "error": f"gateway-host at {self.url} answered /healthz with HTTP {status}"}
        return {"healthy": True, "latency_ms": latency_ms}

    def reset_session(self, session_key: str) -> bool:
        """Clear the host's memory of one session (``DELETE /v1/sessions/{key}``)."""
        if not session_key or not self.is_configured():
            return False
        path = "/v1/sessions/" + urllib.parse.quote(session_key, safe="")
        try:
            status, _ = self._simple_request("DELETE", path, self.connect_timeout + 5.0)
        except Exception as exc:  # noqa: BLE001
            logger.warning("gateway-host reset_session failed: %s", self._describe_connect_error(exc))
            return False
        return 200 <= status < 300

    def get_config_schema(self) -> dict:
        return {
            "fields": [
                {"id": "GATEWAY_HOST_URL", "type": "text", "label": "gateway-host URL",
                 "default": DEFAULT_URL},
                {"id": "GATEWAY_HOST_TOKEN", "type": "password", "label": "Bearer token"},
                {"id": "GATEWAY_HOST_PROFILE", "type": "text", "label": "Profile id (empty: host default)"},
                {"id": "GATEWAY_HOST_SYSTEM_PROMPT", "type": "text",
                 "label": "system_prompt sent to the host", "default": DEFAULT_SYSTEM_PROMPT},
            ],
            "editable": False,
        }

    # ------------------------------------------------------------------ #
    # Streaming                                                           #
    # ------------------------------------------------------------------ #

    def stream_to_queue(self, event_queue, message, session_key,
                        captured_actions=None, **kwargs) -> None:
        turn = _Turn(event_queue, captured_actions)
        conn = None
        try:
            if not self.is_configured():
                raise _TurnError(f"gateway-host plugin is not configured: invalid GATEWAY_HOST_URL {self.url!r}")
            deadline = time.monotonic() + self.turn_timeout
            body = self._request_body(message, session_key, kwargs.get("agent_id"))
            conn = self._connection(self.connect_timeout)
            try:
                conn.connect()
            except Exception as exc:  # noqa: BLE001
                raise _TurnError(self._describe_connect_error(exc)) from None
            # Keep the socket: http.client drops conn.sock once a "Connection:
            # close" response arrives, but the response keeps reading from it.
            sock = conn.sock
            sock.settimeout(self._read_wait(deadline))
            try:
                conn.request("POST", self._path("/v1/conversation"), body=body,
                             headers=self._headers(json_body=True, accept="application/x-ndjson"))
                resp = conn.getresponse()
            except socket.timeout:
                raise _TurnError(self._timeout_text(deadline, waiting_for="the response headers")) from None
            except Exception as exc:  # noqa: BLE001
                raise _TurnError(f"gateway-host at {self.url} failed before answering: {self._exc_text(exc)}") from None
            if resp.status != 200:
                raise _TurnError(self._http_error_text(resp))
            self._pump(sock, resp, turn, deadline)
        except _TurnError as exc:
            logger.warning("gateway-host turn failed: %s", exc)
            turn.error(str(exc))
        except Exception as exc:  # noqa: BLE001 - never raise into OpenVoiceUI's thread
            logger.exception("gateway-host plugin: unexpected failure")
            turn.error(f"gateway-host plugin failed: {self._exc_text(exc)}")
        finally:
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass
            if not turn.finished:  # unreachable by construction; the guarantee stays
                turn.error("gateway-host plugin ended the turn without a result")

    def _pump(self, sock, resp, turn: _Turn, deadline: float) -> None:
        """Copy events from the NDJSON (or SSE) body until the final one."""
        while True:
            sock.settimeout(self._read_wait(deadline))
            try:
                raw = resp.readline(MAX_LINE_BYTES + 1)
            except socket.timeout:
                raise _TurnError(self._timeout_text(deadline)) from None
            except Exception as exc:  # noqa: BLE001 - reset, IncompleteRead, ...
                raise _TurnError(
                    f"connection to gateway-host at {self.url} broke mid-answer "
                    f"after {turn.deltas} text chunk(s): {self._exc_text(exc)}") from None
            if not raw:
                raise _TurnError(
                    f"gateway-host at {self.url} closed the stream before the answer was "
                    f"complete ({turn.deltas} text chunk(s) received, no text_done)")
            if len(raw) > MAX_LINE_BYTES:
                raise _TurnError(f"gateway-host at {self.url} sent an event line over {MAX_LINE_BYTES} bytes")
            line = raw.decode("utf-8", errors="replace").strip()
            # NDJSON is the format asked for; SSE framing is tolerated in case a
            # proxy or an older host ignores the Accept header.
            if not line or line.startswith(":") or line.startswith("event:") or line.startswith("id:"):
                continue
            if line.startswith("data:"):
                line = line[5:].strip()
                if not line:
                    continue
            event = self._parse_event(line)
            if event is None:
                continue
            kind = event["type"]
            if kind == "delta":
                turn.deltas += 1
                turn.put(event)
            elif kind == "action":
                if turn.captured is not None:
                    turn.captured.append(event.get("action"))
                turn.put(event)
            elif kind == "handshake":
                turn.put(event)
            elif kind == "text_done":
                if not event.get("response") and not event.get("interrupted"):
                    # OpenVoiceUI's "empty answer" signal (it retries). A turn the user
                    # interrupted before hearing anything keeps its "": no retry.
                    event["response"] = None
                if not isinstance(event.get("actions"), list):
                    event["actions"] = list(turn.captured or [])
                turn.final(event)
                return
            else:  # error
                if not isinstance(event.get("error"), str) or not event["error"]:
                    event["error"] = f"gateway-host reported an error: {event.get('error')!r}"
                turn.final(event)
                return

    def _parse_event(self, line: str) -> Optional[dict]:
        try:
            event = json.loads(line)
        except ValueError:
            raise _TurnError(f"gateway-host at {self.url} sent a line that is not JSON: {line[:120]!r}") from None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise _TurnError(f"gateway-host at {self.url} sent a line that is not an event: {line[:120]!r}")
        kind = event["type"]
        if kind not in _KNOWN_TYPES:
            logger.info("gateway-host plugin: ignoring unknown event type %r", kind)
            return None
        if kind == "delta" and not isinstance(event.get("text"), str):
            raise _TurnError(f"gateway-host at {self.url} sent a delta without text: {line[:120]!r}")
        return event

    # ------------------------------------------------------------------ #
    # HTTP helpers                                                        #
    # ------------------------------------------------------------------ #

    def _request_body(self, message, session_key, agent_id) -> bytes:
        body = {"message": "" if message is None else str(message)}
        if self.profile:
            body["profile"] = self.profile
        if session_key:
            body["session_key"] = str(session_key)
        if agent_id:
            body["agent_id"] = str(agent_id)
        if self.system_prompt:
            body["system_prompt"] = self.system_prompt
        return json.dumps(body, ensure_ascii=False).encode("utf-8")

    def _path(self, path: str) -> str:
        return (self._parsed.path or "").rstrip("/") + path

    def _headers(self, json_body: bool = False, accept: str = "application/json") -> dict:
        headers = {"Accept": accept, "User-Agent": USER_AGENT}
        if json_body:
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _connection(self, timeout: float):
        p = self._parsed
        if p.scheme == "https":
            return http.client.HTTPSConnection(p.hostname, p.port, timeout=timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(p.hostname, p.port, timeout=timeout)

    def _simple_request(self, method: str, path: str, timeout: float):
        conn = self._connection(timeout)
        try:
            conn.request(method, self._path(path), headers=self._headers())
            resp = conn.getresponse()
            return resp.status, resp.read(MAX_ERROR_BODY_BYTES)
        finally:
            conn.close()

    def _read_wait(self, deadline: float) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _TurnError(f"gateway-host turn exceeded {self.turn_timeout:g} s")
        return min(self.read_timeout, remaining)

    def _timeout_text(self, deadline: float, waiting_for: str = "the next event") -> str:
        if time.monotonic() >= deadline - 0.05:
            return f"gateway-host turn exceeded {self.turn_timeout:g} s (waiting for {waiting_for} from {self.url})"
        return f"gateway-host at {self.url} sent nothing for {self.read_timeout:g} s (waiting for {waiting_for})"

    def _http_error_text(self, resp) -> str:
        try:
            raw = resp.read(MAX_ERROR_BODY_BYTES)
        except Exception:  # noqa: BLE001
            raw = b""
        detail = ""
        try:
            err = json.loads(raw.decode("utf-8", errors="replace")).get("error")
            if isinstance(err, dict):
                code, msg = err.get("code"), err.get("message")
                detail = f"{msg} ({code})" if code else str(msg)
            elif err:
                detail = str(err)
        except Exception:  # noqa: BLE001 - not JSON: show the start of the body
            detail = raw.decode("utf-8", errors="replace").strip()[:200]
        text = f"gateway-host at {self.url} returned HTTP {resp.status}"
        return f"{text}: {detail}" if detail else text

    def _describe_connect_error(self, exc: BaseException) -> str:
        if isinstance(exc, ConnectionRefusedError):
            why = "connection refused (is gateway-host running?)"
        elif isinstance(exc, socket.timeout):
            why = "timed out"
        elif isinstance(exc, socket.gaierror):
            why = f"cannot resolve host ({exc})"
        else:
            why = self._exc_text(exc)
        return f"cannot reach gateway-host at {self.url}: {why}"

    @staticmethod
    def _exc_text(exc: BaseException) -> str:
        text = str(exc)
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
