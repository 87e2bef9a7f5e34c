"""The plugin against the real gateway-host binary and a mock OpenAI-compatible upstream.

Needs GATEWAY_HOST_BIN (the Rust test gateway-host/tests/openvoiceui_plugin.rs sets it).
Without it this module fails on purpose with a message saying how to run it.
"""

import json
import re
import unittest
import uuid

import support
from support import (FINAL, HostProcess, ScriptedServer, TurnRunner, chat_messages,
                     direct_ndjson, finals, http_head, run_turn, sse_answer)

UPSTREAM = None
HOST = None


def setUpModule():
    global UPSTREAM, HOST
    support.host_binary()  # fails the module with instructions when GATEWAY_HOST_BIN is unset
    UPSTREAM = ScriptedServer(_route)
    UPSTREAM.script = lambda req: sse_answer(["ok"])
    try:
        HOST = HostProcess(UPSTREAM.url)
    except BaseException:
        UPSTREAM.stop()
        raise


def tearDownModule():
    if HOST is not None:
        HOST.stop()
    if UPSTREAM is not None:
        UPSTREAM.stop()


def _route(req):
    if req.method == "POST" and req.path.endswith("/chat/completions"):
        return UPSTREAM.script(req)
    return [http_head(404, "Not Found", "application/json"),
            b'{"error":{"message":"not found in mock","type":"invalid_request_error"}}']


EVENT_ORDER = re.compile(r"^(handshake )?((delta|action) )*(text_done|error) $")


class RealHostCase(support.PluginOnHost, unittest.TestCase):
    host = None

    def setUp(self):
        self.host = self.host or HOST
        UPSTREAM.script = lambda req: sse_answer(["ok"])

    def turn(self, gateway, message, session_key, **kwargs):
        """One plugin turn; returns (events, upstream requests it caused)."""
        before = len(UPSTREAM.requests_to("/v1/chat/completions"))
        events = run_turn(gateway, message, session_key, [], **kwargs)
        caused = UPSTREAM.requests_to("/v1/chat/completions")[before:]
        self.assert_well_formed(events)
        return events, caused

    def assert_well_formed(self, events):
        order = "".join(e.get("type", "?") + " " for e in events)
        self.assertRegex(order, EVENT_ORDER, events)
        self.assertEqual(len(finals(events)), 1, events)

    def assert_answer(self, events, text):
        self.assertEqual(events[-1]["type"], "text_done", events)
        deltas = "".join(e["text"] for e in events if e["type"] == "delta")
        self.assertEqual(deltas, text)
        self.assertEqual(events[-1]["response"], text)

    def logs(self):
        return self.host.logs()


class RealHost(RealHostCase):
    def test_stream_is_the_hosts_stream_unchanged(self):
        tokens = ["Hello", " from", " the", " mock", " upstream", "."]
        UPSTREAM.script = lambda req: sse_answer(tokens)
        events, caused = self.turn(self.gateway(), "say hello", "ovui-" + uuid.uuid4().hex,
                                   gateway_id="openai-compat", agent_id="main")
        self.assertEqual(len(caused), 1, self.logs())
        self.assertTrue(caused[0].json().get("stream"))
        self.assert_answer(events, "".join(tokens))
        self.assertIn("timing", events[-1])

        # The same request made directly: identical event types, texts and answer.
        status, direct = direct_ndjson(self.host.url, {
            "message": "say hello", "session_key": "ovui-" + uuid.uuid4().hex,
            "agent_id": "main", "system_prompt": "none"})
        self.assertEqual(status, 200, direct)

        def shape(evs):
            return [(e["type"], e.get("text"), e.get("response")) for e in evs]

        self.assertEqual(shape(events), shape(direct))

    def test_session_key_carries_memory_and_reset_clears_it(self):
        key = "ovui-mem-" + uuid.uuid4().hex
        g = self.gateway()
        UPSTREAM.script = lambda req: sse_answer(["First", " answer."])
        events, _ = self.turn(g, "first question ALPHA", key, agent_id="main")
        self.assert_answer(events, "First answer.")

        UPSTREAM.script = lambda req: sse_answer(["Second."])
        events, [second] = self.turn(g, "second question", key, agent_id="main")
        self.assert_answer(events, "Second.")
        history = [(m["role"], m["content"]) for m in chat_messages(second)]
        self.assertIn(("user", "first question ALPHA"), history)
        self.assertIn(("assistant", "First answer."), history)
        self.assertEqual(history[-1], ("user", "second question"))
        self.assertLess(history.index(("user", "first question ALPHA")),
                        history.index(("assistant", "First answer.")))

        # Another session key does not see it (OpenVoiceUI's recovery-* key after a retry).
        _, [other] = self.turn(g, "fresh session", "recovery-" + uuid.uuid4().hex, agent_id="main")
        self.assertNotIn("ALPHA", json.dumps(chat_messages(other)))

        # reset_session (DELETE /v1/sessions/{key}) clears the memory.
        self.assertTrue(g.reset_session(key), self.logs())
        _, [after] = self.turn(g, "after reset", key, agent_id="main")
        self.assertNotIn("ALPHA", json.dumps(chat_messages(after)))

    def test_system_prompt_none_sends_no_system_message(self):
        _, [req] = self.turn(self.gateway(), "instructions inlined by OpenVoiceUI",
                             "ovui-" + uuid.uuid4().hex)
        messages = chat_messages(req)
        self.assertEqual([m["role"] for m in messages if m["role"] == "system"], [], messages)
        self.assertNotIn("VOICE-PROMPT-MARKER", json.dumps(messages))
        self.assertEqual(messages[-1], {"role": "user", "content": "instructions inlined by OpenVoiceUI"})

    def test_without_system_prompt_none_the_host_adds_its_own(self):
        # The contrast that makes the test above meaningful.
        _, [req] = self.turn(self.gateway(system_prompt=""), "hi", "ovui-" + uuid.uuid4().hex)
        system = [m["content"] for m in chat_messages(req) if m["role"] == "system"]
        self.assertEqual(len(system), 1, chat_messages(req))
        self.assertIn("VOICE-PROMPT-MARKER", system[0])
        self.assertIn(self.host.default_system_prompt, system[0])
        self.assertNotIn("# comment line", system[0])

    def test_profile_from_environment_is_used(self):
        _, [req] = self.turn(self.gateway(profile="ovui-test", system_prompt=""), "hi",
                             "ovui-" + uuid.uuid4().hex)
        self.assertIn("PROFILE-PROMPT-MARKER", json.dumps(chat_messages(req)))

    def test_unknown_profile_is_one_error_with_the_hosts_message(self):
        events, caused = self.turn(self.gateway(profile="no-such-profile"), "hi", "k")
        self.assertEqual(caused, [])
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["type"], "error")
        self.assertRegex(events[0]["error"], r"HTTP 4\d\d")
        self.assertIn("no-such-profile", events[0]["error"])

    def test_empty_answer_reaches_openvoiceui_as_none(self):
        UPSTREAM.script = lambda req: sse_answer([])
        events, _ = self.turn(self.gateway(), "say nothing", "ovui-" + uuid.uuid4().hex)
        self.assertEqual(events[-1]["type"], "text_done", events)
        self.assertIsNone(events[-1]["response"])

    def test_upstream_failure_is_one_error(self):
        UPSTREAM.script = lambda req: [http_head(500, "Internal Server Error", "application/json"),
                                       b'{"error":{"message":"mock exploded","type":"server_error"}}']
        events, _ = self.turn(self.gateway(), "hi", "ovui-" + uuid.uuid4().hex)
        self.assertEqual(events[-1]["type"], "error", events)
        self.assertNotIn("text_done", [e["type"] for e in events])

    def test_health_check(self):
        health = self.gateway().health_report()
        self.assertTrue(health["healthy"], health)
        self.assertIsInstance(health["latency_ms"], float)
        self.assertLess(health["latency_ms"], 2000)


class KilledHost(RealHostCase):
    def setUp(self):
        self.host = HostProcess(UPSTREAM.url)
        self.addCleanup(self.host.stop)
        super().setUp()

    def test_host_killed_mid_stream_ends_with_one_error(self):
        hold = UPSTREAM.hold()
        self.addCleanup(hold.set)
        UPSTREAM.script = lambda req: sse_answer(["Partial", " never sent"], hold=hold)
        g = self.gateway()
        runner = TurnRunner(g, "long answer please", "ovui-" + uuid.uuid4().hex, [])
        while True:  # bounded: next_event fails after support.WAIT seconds
            event = runner.next_event()
            self.assertNotIn(event["type"], FINAL, runner.events)
            if event["type"] == "delta":
                break
        self.host.kill()
        events = runner.finish()
        self.assert_well_formed(events)
        self.assertEqual(events[-1]["type"], "error", events)
        self.assertIn(self.host.url, events[-1]["error"])
        self.assertEqual("".join(e["text"] for e in events if e["type"] == "delta"), "Partial")

        health = g.health_report()
        self.assertFalse(health["healthy"])
        events = run_turn(g, "anyone there?", "k")
        self.assertEqual([e["type"] for e in events], ["error"])
        self.assertIn("refused", events[0]["error"])


if __name__ == "__main__":
    unittest.main()
