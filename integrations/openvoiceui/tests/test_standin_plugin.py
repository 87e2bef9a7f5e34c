"""The plugin against a stand-in host we fully control (no gateway-host needed).

Run alone: python3 -m unittest discover -s integrations/openvoiceui/tests -p 'test_standin*.py' -v
"""

import json
import logging
import os
import subprocess
import sys
import unittest

import support
from support import ScriptedServer, finals, http_head, ndjson, run_turn

Gateway = support.load_plugin_class()

HANDSHAKE = {"type": "handshake", "ms": 12, "gateway": "openai-compat"}
DONE = {"type": "text_done", "response": "Hello there.", "actions": [],
        "timing": {"ttft_ms": 12, "total_ms": 40}}
DELTAS = [{"type": "delta", "text": "Hello"}, {"type": "delta", "text": " there"},
          {"type": "delta", "text": "."}]


class StandInCase(support.PluginOnHost, unittest.TestCase):
    def setUp(self):
        self.host = ScriptedServer(lambda req: [http_head(404, "Not Found")])
        self.addCleanup(self.host.stop)

    def answer(self, *pieces):
        self.host.responder = lambda req: list(pieces)

    def assert_one_error(self, events, *fragments):
        self.assertEqual([e["type"] for e in finals(events)], ["error"], events)
        self.assertEqual(events[-1]["type"], "error")
        self.assertIsInstance(events[-1]["error"], str)
        for fragment in fragments:
            self.assertIn(fragment, events[-1]["error"])


class PluginLoading(unittest.TestCase):
    def test_manifest_matches_openvoiceui_loader(self):
        manifest = json.loads((support.PLUGIN_DIR / "plugin.json").read_text())
        self.assertEqual(manifest["provides"], "gateway")
        self.assertEqual(manifest["gateway_class"], "Gateway")
        self.assertTrue((support.PLUGIN_DIR / "gateway.py").is_file())
        missing = [v for v in manifest.get("requires_env", []) if not os.getenv(v)]
        self.assertEqual(missing, [], "plugin would be skipped by OpenVoiceUI")
        from services.gateways.base import GatewayBase
        self.assertTrue(issubclass(Gateway, GatewayBase))

    def test_class_attributes(self):
        if "GATEWAY_HOST_GATEWAY_ID" not in os.environ:
            self.assertEqual(Gateway.gateway_id, "openai-compat")
        self.assertFalse(Gateway.persistent)
        self.assertTrue({"streaming", "sessions", "reset"} <= set(Gateway.capabilities))

    def test_imports_standalone_without_openvoiceui(self):
        code = ("import importlib.util, sys\n"
                "spec = importlib.util.spec_from_file_location('gw', sys.argv[1])\n"
                "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
                "g = m.Gateway(url='http://127.0.0.1:9')\n"
                "print(m.GatewayBase.__module__, g.gateway_id, g.is_configured())\n")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GATEWAY_HOST_GATEWAY_ID")}
        out = subprocess.run([sys.executable, "-c", code, str(support.PLUGIN_DIR / "gateway.py")],
                             cwd="/", env=env, capture_output=True, text=True, timeout=support.WAIT)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.split(), ["gw", "openai-compat", "True"])

    def test_configuration(self):
        self.assertTrue(Gateway(url="http://127.0.0.1:8080").is_configured())
        self.assertTrue(Gateway(url="https://gw.example/base").is_configured())
        self.assertFalse(Gateway(url="not a url").is_configured())
        self.assertFalse(Gateway(url="ftp://host").is_configured())
        self.assertFalse(Gateway(url="http://host:notaport").is_configured())

    def test_environment_is_read(self):
        env = {"GATEWAY_HOST_URL": "http://10.0.0.1:9000/", "GATEWAY_HOST_TOKEN": "sekrit",
               "GATEWAY_HOST_PROFILE": "p1", "GATEWAY_HOST_SYSTEM_PROMPT": "",
               "GATEWAY_HOST_READ_TIMEOUT": "12", "GATEWAY_HOST_TURN_TIMEOUT": "bogus"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            g = Gateway()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.assertEqual(g.url, "http://10.0.0.1:9000")
        self.assertEqual(g.profile, "p1")
        self.assertEqual(g.system_prompt, "")
        self.assertEqual(g.read_timeout, 12.0)
        self.assertEqual(g.turn_timeout, 300.0)
        self.assertNotIn("sekrit", repr(g))


class Streaming(StandInCase):
    def test_events_pass_through_unchanged_and_in_order(self):
        action = {"type": "action", "action": {"type": "tool", "name": "canvas"}}
        script = [HANDSHAKE, DELTAS[0], action, DELTAS[1], DELTAS[2], DONE]
        self.answer(http_head(), ndjson(*script))
        captured = []
        events = run_turn(self.gateway(), captured_actions=captured)
        self.assertEqual(events, script)
        self.assertEqual(captured, [action["action"]])

    def test_request_carries_message_session_agent_profile_and_system_prompt(self):
        self.answer(http_head(), ndjson(DONE))
        g = self.gateway(profile="default", token="tok-123")
        run_turn(g, "voice prompt + instructions + question", "voice-main-1",
                 [], gateway_id="openai-compat", agent_id="main")
        [req] = self.host.requests_to("/v1/conversation")
        self.assertEqual(req.method, "POST")
        self.assertEqual(req.json(), {"message": "voice prompt + instructions + question",
                                      "session_key": "voice-main-1", "agent_id": "main",
                                      "profile": "default", "system_prompt": "none"})
        headers = {k.lower(): v for k, v in req.headers.items()}
        self.assertEqual(headers["accept"], "application/x-ndjson")
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(headers["authorization"], "Bearer tok-123")

    def test_optional_fields_are_omitted(self):
        self.answer(http_head(), ndjson(DONE))
        run_turn(self.gateway(system_prompt=""), "hi", None, None)
        [req] = self.host.requests_to("/v1/conversation")
        self.assertEqual(req.json(), {"message": "hi"})
        self.assertNotIn("authorization", {k.lower() for k in req.headers})

    def test_url_path_prefix_is_kept(self):
        self.answer(http_head(), ndjson(DONE))
        run_turn(self.gateway(url=self.host.url + "/prefix/"))
        self.assertEqual([r.path for r in self.host.requests], ["/prefix/v1/conversation"])

    def test_empty_answer_becomes_none(self):
        self.answer(http_head(), ndjson(HANDSHAKE, dict(DONE, response="")))
        events = run_turn(self.gateway())
        self.assertEqual(events[-1]["type"], "text_done")
        self.assertIsNone(events[-1]["response"])
        self.assertEqual(len(finals(events)), 1)

    def test_interrupted_empty_answer_is_not_retried(self):
        self.answer(http_head(), ndjson(dict(DONE, response="", interrupted=True)))
        events = run_turn(self.gateway())
        self.assertEqual(events[-1]["response"], "")
        self.assertTrue(events[-1]["interrupted"])

    def test_missing_actions_filled_from_captured(self):
        action = {"type": "action", "action": {"name": "x"}}
        self.answer(http_head(), ndjson(action, {"type": "text_done", "response": "ok"}))
        events = run_turn(self.gateway(), captured_actions=[])
        self.assertEqual(events[-1]["actions"], [{"name": "x"}])

    def test_host_error_event_is_passed_on(self):
        err = {"type": "error", "error": "upstream: HTTP 429 rate limited"}
        self.answer(http_head(), ndjson(HANDSHAKE, DELTAS[0], err))
        events = run_turn(self.gateway())
        self.assertEqual(events, [HANDSHAKE, DELTAS[0], err])

    def test_nothing_after_the_final_event(self):
        self.answer(http_head(), ndjson(DELTAS[0], DONE, DELTAS[1], DONE))
        self.assertEqual(run_turn(self.gateway()), [DELTAS[0], DONE])

    def test_sse_framing_is_tolerated(self):
        body = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode()
                        for e in [DELTAS[0], DONE])
        self.answer(http_head(content_type="text/event-stream"), b": keep-alive\n\n", body)
        self.assertEqual(run_turn(self.gateway()), [DELTAS[0], DONE])

    def test_blank_lines_and_unknown_event_types_are_skipped(self):
        self.answer(http_head(), b"\n\r\n", ndjson({"type": "usage", "tokens": 3}, DELTAS[0], DONE))
        self.assertEqual(run_turn(self.gateway()), [DELTAS[0], DONE])

    def test_chunked_transfer_encoding(self):
        body = ndjson(DELTAS[0], DONE)
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        self.answer(http_head(extra=["Transfer-Encoding: chunked"]), chunked)
        self.assertEqual(run_turn(self.gateway()), [DELTAS[0], DONE])


class Failures(StandInCase):
    def test_host_down_gives_one_error_naming_the_url(self):
        url = f"http://127.0.0.1:{support.unused_port()}"
        events = run_turn(self.gateway(url=url))
        self.assertEqual(len(events), 1)
        self.assert_one_error(events, url, "refused")

    def test_not_configured_gives_one_error(self):
        events = run_turn(Gateway(url="nonsense"))
        self.assert_one_error(events, "GATEWAY_HOST_URL")

    def test_http_error_carries_the_hosts_message(self):
        body = json.dumps({"error": {"code": "profile_not_found",
                                     "message": "no profile named 'nope'"}}).encode()
        self.answer(http_head(404, "Not Found", "application/json"), body)
        events = run_turn(self.gateway(profile="nope"))
        self.assert_one_error(events, "HTTP 404", "no profile named 'nope'", "profile_not_found")

    def test_http_error_with_non_json_body(self):
        self.answer(http_head(502, "Bad Gateway", "text/html"), b"<html>bad gateway</html>")
        events = run_turn(self.gateway())
        self.assert_one_error(events, "HTTP 502", "bad gateway")

    def test_connection_dropped_mid_stream(self):
        self.answer(http_head(), ndjson(HANDSHAKE, DELTAS[0]))  # then the server closes
        events = run_turn(self.gateway())
        self.assertEqual(events[:2], [HANDSHAKE, DELTAS[0]])
        self.assert_one_error(events, "closed the stream", "1 text chunk")

    def test_chunked_stream_cut_mid_chunk(self):
        body = ndjson(DELTAS[0], DELTAS[1])
        self.answer(http_head(extra=["Transfer-Encoding: chunked"]),
                    b"%x\r\n%s\r\n" % (len(body), body), b"40\r\n{\"type\":\"de")
        events = run_turn(self.gateway())
        self.assertEqual(events[:2], DELTAS[:2])
        self.assert_one_error(events)

    def test_garbage_line_ends_the_turn_with_an_error(self):
        self.answer(http_head(), ndjson(DELTAS[0]), b"<<garbage>>\n", ndjson(DONE))
        events = run_turn(self.gateway())
        self.assertEqual(events[0], DELTAS[0])
        self.assert_one_error(events, "not JSON")

    def test_json_that_is_not_an_event(self):
        self.answer(http_head(), b"[1, 2]\n")
        self.assert_one_error(run_turn(self.gateway()), "not an event")

    def test_delta_without_text(self):
        self.answer(http_head(), ndjson({"type": "delta", "text": None}, DONE))
        self.assert_one_error(run_turn(self.gateway()), "without text")

    def test_overlong_line(self):
        self.answer(http_head(), b"x" * ((1 << 20) + 10), b"\n")
        self.assert_one_error(run_turn(self.gateway()), "over")

    def test_idle_timeout(self):
        hold = self.host.hold()
        self.answer(http_head(), ndjson(DELTAS[0]), hold, ndjson(DONE))
        events = run_turn(self.gateway(read_timeout=0.3))
        self.assertEqual(events[0], DELTAS[0])
        self.assert_one_error(events, "sent nothing for 0.3 s")

    def test_no_response_headers_timeout(self):
        hold = self.host.hold()
        self.answer(hold, http_head(), ndjson(DONE))
        self.assert_one_error(run_turn(self.gateway(read_timeout=0.3)), "response headers")

    def test_turn_deadline(self):
        hold = self.host.hold()
        self.answer(http_head(), ndjson(DELTAS[0]), hold, ndjson(DONE))
        events = run_turn(self.gateway(read_timeout=20, turn_timeout=0.4))
        self.assert_one_error(events, "exceeded 0.4 s")

    def test_token_never_logged_or_emitted(self):
        self.answer(http_head(401, "Unauthorized", "application/json"),
                    json.dumps({"error": {"code": "unauthorized", "message": "bad token"}}).encode())
        with self.assertLogs("plugins", level=logging.DEBUG) as logs:
            events = run_turn(self.gateway(token="super-secret-token"))
            logging.getLogger("plugins").debug("marker")
        self.assert_one_error(events, "HTTP 401")
        self.assertNotIn("super-secret-token", json.dumps(events))
        self.assertNotIn("super-secret-token", "\n".join(logs.output))

    def test_captured_actions_may_be_none_or_not_a_list(self):
        action = {"type": "action", "action": {"name": "x"}}
        self.answer(http_head(), ndjson(action, DONE))
        self.assertEqual(run_turn(self.gateway(), captured_actions=None)[-1], DONE)
        self.assertEqual(run_turn(self.gateway(), captured_actions="weird")[-1], DONE)


class HealthAndReset(StandInCase):
    def test_healthy(self):
        self.host.responder = lambda req: [http_head(200, "OK", "application/json"),
                                           b'{"status":"ok"}']
        health = Gateway(url=self.host.url).health_report()
        self.assertTrue(health["healthy"], health)
        self.assertIsInstance(health["latency_ms"], float)
        self.assertEqual([r.path for r in self.host.requests], ["/healthz"])

    def test_check_health_is_openvoiceuis_tuple(self):
        self.host.responder = lambda req: [http_head(200, "OK", "application/json"),
                                           b'{"status":"ok"}']
        healthy, latency_ms = Gateway(url=self.host.url).check_health()
        self.assertIs(healthy, True)
        self.assertIsInstance(latency_ms, float)
        down = Gateway(url=f"http://127.0.0.1:{support.unused_port()}").check_health()
        self.assertEqual(down, (False, None))

    def test_unhealthy_status(self):
        self.host.responder = lambda req: [http_head(503, "Unavailable", "application/json"), b"{}"]
        health = Gateway(url=self.host.url).health_report()
        self.assertFalse(health["healthy"])
        self.assertIn("HTTP 503", health["error"])

    def test_host_down(self):
        url = f"http://127.0.0.1:{support.unused_port()}"
        health = Gateway(url=url).health_report()
        self.assertFalse(health["healthy"])
        self.assertIsNone(health["latency_ms"])
        self.assertIn(url, health["error"])

    def test_health_probe_times_out_quickly(self):
        hold = self.host.hold()
        self.host.responder = lambda req: [hold]
        health = Gateway(url=self.host.url).health_report()
        self.assertFalse(health["healthy"])
        self.assertIn("timed out", health["error"])

    def test_reset_session(self):
        self.host.responder = lambda req: [http_head(204, "No Content", "application/json")]
        self.assertTrue(Gateway(url=self.host.url).reset_session("voice main/1"))
        self.assertEqual([(r.method, r.path) for r in self.host.requests],
                         [("DELETE", "/v1/sessions/voice%20main%2F1")])
        self.assertFalse(Gateway(url=f"http://127.0.0.1:{support.unused_port()}").reset_session("k"))


if __name__ == "__main__":
    unittest.main()
