"""The official `openai` Python SDK against the real gateway-host binary (OpenAI-compatible
facade) in front of a scripted upstream on 127.0.0.1.

Run through `cargo test -p gateway-host --test openai_sdk`, or with GATEWAY_HOST_BIN set:
    python3 -m unittest discover -v -s integrations/openai-sdk
Needs the packages in integrations/requirements-test.txt.
"""

import asyncio
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import openai  # noqa: E402
from openai import AsyncOpenAI, OpenAI  # noqa: E402

from support import API_KEY, USAGE, HostProcess, MockUpstream, answer, error  # noqa: E402

VOICE_PROMPT = "# comment line, stripped by the host\nVOICE-PROMPT: speak plainly.\n"
PROFILES = [
    {"id": "default", "name": "Default", "adapter_config": {"gateway_id": "openai-compat"},
     "system_prompt": "DEFAULT-PROFILE."},
    {"id": "sdk-profile", "name": "SDK test", "adapter": "clawdbot",
     "adapter_config": {"gateway_id": "openai-compat", "sessionKey": None},
     "llm": {"model": "profile-model", "parameters": {"max_tokens": 64, "temperature": 0.5}},
     "system_prompt": "PROFILE-PROMPT: answer briefly."},
]
SYSTEM = "VOICE-PROMPT: speak plainly.\n\nPROFILE-PROMPT: answer briefly."
MODEL = "sdk-profile"


class OpenAiSdkTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = MockUpstream()
        try:
            cls.host = HostProcess(cls.upstream.url, PROFILES, VOICE_PROMPT)
        except BaseException:
            cls.upstream.stop()
            raise
        # No retries: each error must surface from the first response.
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

    def user(self, text):
        return [{"role": "user", "content": text}]

    def test_streaming(self):
        stream = self.client.chat.completions.create(
            model=MODEL, stream=True,
            messages=[{"role": "system", "content": "Client rules."},
                      {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello!"},
                      {"role": "user", "content": [{"type": "text", "text": "How are you?"}]}])
        chunks = list(stream)
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, "Hello there.")
        self.assertEqual(chunks[-1].choices[0].finish_reason, "stop")
        self.assertTrue(all(c.choices[0].finish_reason is None for c in chunks[:-1]))
        self.assertEqual({c.id for c in chunks}, {chunks[0].id})
        self.assertTrue(chunks[0].id.startswith("chatcmpl-"), chunks[0].id)
        self.assertTrue(all(c.model == MODEL and c.object == "chat.completion.chunk"
                            for c in chunks))
        self.assertTrue(all(c.usage is None for c in chunks))
        sent = self.upstream.last_body()
        self.assertEqual(sent["model"], "profile-model")
        self.assertEqual(sent["max_tokens"], 64)
        self.assertEqual(sent["temperature"], 0.5)
        self.assertEqual(sent["messages"], [
            {"role": "system", "content": SYSTEM},
            {"role": "system", "content": "Client rules."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
        ])

    def test_non_streaming(self):
        self.upstream.push(answer(["Fine", ", thanks."], usage=USAGE))
        completion = self.client.chat.completions.create(
            model=MODEL, messages=self.user("How are you?"), max_tokens=12, temperature=0.1)
        self.assertEqual(completion.object, "chat.completion")
        self.assertEqual(completion.model, MODEL)
        self.assertTrue(completion.id.startswith("chatcmpl-"))
        self.assertEqual(len(completion.choices), 1)
        choice = completion.choices[0]
        self.assertEqual(choice.message.role, "assistant")
        self.assertEqual(choice.message.content, "Fine, thanks.")
        self.assertEqual(choice.finish_reason, "stop")
        self.assertEqual(completion.usage.prompt_tokens, 7)
        self.assertEqual(completion.usage.completion_tokens, 2)
        self.assertEqual(completion.usage.total_tokens, 9)
        sent = self.upstream.last_body()
        self.assertEqual((sent["max_tokens"], round(sent["temperature"], 3)), (12, 0.1))

    def test_include_usage(self):
        self.upstream.push(answer(["Counted."], usage=USAGE))
        stream = self.client.chat.completions.create(
            model=MODEL, messages=self.user("Count"), stream=True,
            stream_options={"include_usage": True})
        chunks = list(stream)
        last = chunks[-1]
        self.assertEqual(last.choices, [])
        self.assertEqual((last.usage.prompt_tokens, last.usage.completion_tokens,
                          last.usage.total_tokens), (7, 2, 9))
        self.assertTrue(all(c.usage is None for c in chunks[:-1]))
        self.assertEqual(chunks[-2].choices[0].finish_reason, "stop")

    def test_unknown_model_raises_not_found(self):
        with self.assertRaises(openai.NotFoundError) as caught:
            self.client.chat.completions.create(model="no-such-profile", messages=self.user("x"))
        self.assertEqual(caught.exception.status_code, 404)
        self.assertEqual(caught.exception.code, "model_not_found")
        self.assertEqual(caught.exception.param, "model")
        self.assertIn("no-such-profile", caught.exception.message)
        with self.assertRaises(openai.NotFoundError):
            self.client.chat.completions.create(model="no-such-profile", stream=True,
                                                messages=self.user("x"))
        with self.assertRaises(openai.NotFoundError):
            self.client.models.retrieve("no-such-profile")

    def test_a_malformed_message_raises_bad_request(self):
        with self.assertRaises(openai.BadRequestError) as caught:
            self.client.chat.completions.create(model=MODEL, messages=[
                {"role": "tool", "content": "12 C"}])
        self.assertEqual(caught.exception.code, "missing_required_parameter")
        self.assertEqual(caught.exception.param, "messages[0].tool_call_id")

    def test_memory_via_user(self):
        self.upstream.push(answer(["Nice to meet you, Ada."]))
        self.client.chat.completions.create(model=MODEL, user="sdk-memory-1",
                                            messages=self.user("My name is Ada."))
        self.upstream.push(answer(["You are Ada."]))
        reply = self.client.chat.completions.create(model=MODEL, user="sdk-memory-1",
                                                    messages=self.user("What is my name?"))
        self.assertEqual(reply.choices[0].message.content, "You are Ada.")
        self.assertEqual(self.upstream.last_body()["messages"], [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": "Nice to meet you, Ada."},
            {"role": "user", "content": "What is my name?"},
        ])
        # The X-Session-Key header does the same; another key starts empty.
        self.client.chat.completions.create(model=MODEL, messages=self.user("Fresh start"),
                                            extra_headers={"X-Session-Key": "sdk-memory-2"})
        self.assertEqual(len(self.upstream.last_body()["messages"]), 2)

    def test_upstream_error_raises_in_the_stream(self):
        self.upstream.push(error(429, "Rate limit reached for requests"))
        stream = self.client.chat.completions.create(model=MODEL, messages=self.user("x"),
                                                     stream=True)
        with self.assertRaises(openai.APIError) as caught:
            for _ in stream:
                pass
        self.assertIn("Rate limit reached", caught.exception.message)
        self.assertIn("429", caught.exception.message)
        self.assertNotIn(API_KEY, str(caught.exception.body))

    def test_upstream_error_raises_without_stream(self):
        self.upstream.push(error(401, "Incorrect API key provided"))
        with self.assertRaises(openai.InternalServerError) as caught:
            self.client.chat.completions.create(model=MODEL, messages=self.user("x"))
        self.assertEqual(caught.exception.status_code, 502)
        self.assertEqual(caught.exception.code, "upstream_error")
        self.assertIn("Incorrect API key provided", caught.exception.message)
        self.assertNotIn(API_KEY, caught.exception.response.text)

    def test_models(self):
        models = self.client.models.list()
        self.assertEqual([m.id for m in models], ["default", MODEL])
        model = self.client.models.retrieve(MODEL)
        self.assertEqual((model.id, model.object, model.owned_by),
                         (MODEL, "model", "gateway-host"))
        self.assertGreater(model.created, 1_600_000_000)

    def test_async_client_streams(self):
        async def run():
            async with AsyncOpenAI(base_url=self.host.url + "/v1", api_key="k",
                                   max_retries=0, timeout=30) as client:
                stream = await client.chat.completions.create(
                    model="default", messages=self.user("Hi"), stream=True)
                return [c async for c in stream]

        chunks = asyncio.run(run())
        self.assertEqual("".join(c.choices[0].delta.content or "" for c in chunks),
                         "Hello there.")
        self.assertEqual(self.upstream.last_body()["messages"][0]["content"],
                         "VOICE-PROMPT: speak plainly.\n\nDEFAULT-PROFILE.")


if __name__ == "__main__":
    unittest.main()
