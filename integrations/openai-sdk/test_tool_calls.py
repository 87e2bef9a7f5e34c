"""Tool calls through the real gateway-host binary, read by the official `openai` Python SDK.

For every tool-call fixture pair (gateway-openai-compat/tests/conformance-tools/, and the shared
conformance-tools/ folder when it exists) the mock upstream replays the recorded stream byte
for byte; the SDK's own stream accumulator (`client.chat.completions.stream(...)` then
`get_final_completion()`) and its non-streamed `create(...)` must rebuild exactly the calls the
fixture expects. A two-step round trip sends the SDK's message back with the provider's keys.

Run through `cargo test -p gateway-host --test openai_sdk`, or with GATEWAY_HOST_BIN set:
    python3 -m unittest discover -v -s integrations/openai-sdk
"""

import json
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import openai  # noqa: E402
from openai import OpenAI  # noqa: E402

from support import API_KEY, HostProcess, MockUpstream, answer, replay, tool_fixtures  # noqa: E402

MODEL = "tools"
PROFILES = [{"id": MODEL, "name": "Tools", "adapter_config": {"gateway_id": "openai-compat"}}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
FIXTURES = tool_fixtures()


def gemini_stream(text, calls):
    """An upstream stream as Gemini's compatibility layer sends it: text, then whole calls
    without `index`, `finish_reason: stop`."""
    def data(delta, finish=None):
        chunk = {"id": "g1", "object": "chat.completion.chunk", "created": 1,
                 "model": "gemini-2.5-flash",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"
    return replay(data({"role": "assistant", "content": text}) + data({"tool_calls": calls})
                  + data({}, "stop") + b"data: [DONE]\n\n")


class ToolCallsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = MockUpstream()
        try:
            cls.host = HostProcess(cls.upstream.url, PROFILES, "Speak plainly.\n")
        except BaseException:
            cls.upstream.stop()
            raise
        cls.client = OpenAI(base_url=cls.host.url + "/v1", api_key="client-key",
                            max_retries=0, timeout=30)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.host.stop()
        cls.upstream.stop()

    def setUp(self):
        with self.upstream.lock:
            self.upstream.script.clear()

    def assert_calls(self, meta, message):
        """The SDK's rebuilt calls are the fixture's: in order, name, arguments (as JSON),
        the upstream's id when it gave one (else unique non-empty ids), provider keys."""
        calls = message.tool_calls or []
        expected = meta["expect_tool_calls"]
        self.assertEqual(len(calls), len(expected), calls)
        ids = [c.id for c in calls]
        self.assertTrue(all(ids) and len(set(ids)) == len(ids), ids)
        for want, got in zip(expected, calls):
            self.assertEqual(got.type, "function")
            self.assertEqual(got.function.name, want["name"])
            self.assertIsInstance(got.function.arguments, str)
            self.assertEqual(json.loads(got.function.arguments), want["arguments"])
            if "id" in want:
                self.assertEqual(got.id, want["id"])
            for key, value in want.get("extra", {}).items():
                self.assertEqual(got.to_dict().get(key), value, key)

    def test_the_stream_accumulator_rebuilds_every_fixtures_calls(self):
        self.assertGreaterEqual(len(FIXTURES), 5)
        for name, sse, meta in FIXTURES:
            with self.subTest(fixture=name):
                self.upstream.push(replay(sse))
                with self.client.chat.completions.stream(
                        model=MODEL, messages=QUESTION, tools=TOOLS) as stream:
                    if "expect_error_contains" in meta:
                        with self.assertRaises(openai.APIError) as caught:
                            for _ in stream:
                                pass
                        for needle in meta["expect_error_contains"]:
                            self.assertIn(needle, caught.exception.message)
                        snapshot = stream.current_completion_snapshot
                        self.assertFalse(snapshot.choices[0].message.tool_calls,
                                         "no half call reached the client")
                        continue
                    for _ in stream:
                        pass
                    completion = stream.get_final_completion()
                choice = completion.choices[0]
                self.assertEqual(choice.finish_reason, meta["expect_finish_reason"])
                self.assertEqual(choice.message.content or "", meta["expect_text"])
                self.assert_calls(meta, choice.message)

    def test_create_returns_every_fixtures_calls_without_streaming(self):
        for name, sse, meta in FIXTURES:
            with self.subTest(fixture=name):
                self.upstream.push(replay(sse))
                if "expect_error_contains" in meta:
                    with self.assertRaises(openai.InternalServerError) as caught:
                        self.client.chat.completions.create(
                            model=MODEL, messages=QUESTION, tools=TOOLS)
                    for needle in meta["expect_error_contains"]:
                        self.assertIn(needle, caught.exception.message)
                    continue
                completion = self.client.chat.completions.create(
                    model=MODEL, messages=QUESTION, tools=TOOLS)
                choice = completion.choices[0]
                self.assertEqual(choice.finish_reason, meta["expect_finish_reason"])
                if choice.message.tool_calls and not meta["expect_text"]:
                    self.assertIsNone(choice.message.content)
                self.assertEqual(choice.message.content or "", meta["expect_text"])
                self.assert_calls(meta, choice.message)

    def test_a_round_trip_sends_the_providers_keys_back(self):
        signature = {"google": {"thought_signature": "CiQBVKhc7kR2uyxNlL8dV5x0"}}
        call = {"id": "function-call-1", "type": "function", "extra_content": signature,
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
        self.upstream.push(gemini_stream("", [call]))
        completion = self.client.chat.completions.create(
            model=MODEL, messages=QUESTION, tools=TOOLS, tool_choice="auto", seed=7)
        message = completion.choices[0].message
        self.assertEqual(completion.choices[0].finish_reason, "tool_calls")
        self.assertEqual(message.tool_calls[0].to_dict()["extra_content"], signature)
        sent = self.upstream.last_body()
        self.assertEqual((sent["tools"], sent["tool_choice"], sent["seed"]), (TOOLS, "auto", 7))

        # As OpenAI's and Gemini's guides do it: append the SDK's message, then the result.
        messages = QUESTION + [message, {"role": "tool", "tool_call_id": message.tool_calls[0].id,
                                         "content": '{"celsius": 18}'}]
        self.upstream.push(answer(["It is 18 C in Paris."]))
        final = self.client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
        self.assertEqual(final.choices[0].message.content, "It is 18 C in Paris.")
        sent = self.upstream.last_body()["messages"]
        self.assertEqual(sent[2]["tool_calls"], [call], "the call went back whole")
        self.assertEqual(sent[3], {"role": "tool", "tool_call_id": "function-call-1",
                                   "content": '{"celsius": 18}'})
        self.assertNotIn(API_KEY, json.dumps(sent))

    def test_an_image_part_reaches_the_upstream(self):
        image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
        user = {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}
        reply = self.client.chat.completions.create(model=MODEL, messages=[user])
        self.assertEqual(reply.choices[0].message.content, "Hello there.")
        self.assertEqual(self.upstream.last_body()["messages"][-1], user)


if __name__ == "__main__":
    unittest.main()
