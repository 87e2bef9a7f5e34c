"""The plugin on a real gateway-host whose profile uses an MCP tool server: OpenVoiceUI's
queue and captured_actions get every tool action.

Needs GATEWAY_HOST_BIN (set by gateway-host/tests/openvoiceui_plugin.rs) and the reference
MCP server installed by scripts/test.sh (integrations/mcp-servers).
"""

import re
import unittest
import uuid

import support
from support import (HostProcess, ScriptedServer, http_head, run_turn, sse_answer,
                     sse_tool_calls)

EVERYTHING_JS = (support.REPO_ROOT / "integrations" / "mcp-servers" / "node_modules" /
                 "@modelcontextprotocol" / "server-everything" / "dist" / "index.js")

TOOL_PROFILE = {
    "id": "ovui-tools",
    "name": "OpenVoiceUI plugin tool test",
    "adapter": "clawdbot",
    "adapter_config": {"gateway_id": "openai-compat", "tool_servers": ["everything"]},
    "features": {"tools": True, "canvas": True},
    "system_prompt": "You can use tools.",
}

# Tool actions may come before the handshake (it marks the first spoken token).
EVENT_ORDER = re.compile(r"^(action )*(handshake )?((delta|action) )*(text_done|error) $")


class ToolActionsReachOpenVoiceUI(support.PluginOnHost, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        support.host_binary()
        if not EVERYTHING_JS.is_file():
            raise RuntimeError("the MCP test server is not installed: run scripts/test.sh, or "
                               "(cd integrations/mcp-servers && npm ci)")
        cls.replies = []
        cls.upstream = ScriptedServer(cls._route)
        toml = ('[tools.servers.everything]\ncommand = "node"\n'
                f'args = ["{EVERYTHING_JS}", "stdio"]\n')
        try:
            cls.host = HostProcess(cls.upstream.url, gateway_toml=toml,
                                   extra_profiles=[TOOL_PROFILE])
        except BaseException:
            cls.upstream.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.host.stop()
        cls.upstream.stop()

    @classmethod
    def _route(cls, req):
        if req.method == "POST" and req.path.endswith("/chat/completions") and cls.replies:
            return cls.replies.pop(0)
        return [http_head(404, "Not Found", "application/json"), b'{"error":{"message":"no reply"}}']

    def test_every_action_reaches_the_queue_and_captured_actions(self):
        type(self).replies = [
            sse_tool_calls("Let me echo that. ",
                           [("call_e", "echo", '{"message": "from openvoiceui"}')]),
            sse_answer(["Echoed", " it."]),
        ]
        captured = []
        events = run_turn(self.gateway(profile="ovui-tools"), "echo please",
                          "ovui-tools-" + uuid.uuid4().hex, captured)
        order = "".join(e["type"] + " " for e in events)
        self.assertRegex(order, EVENT_ORDER, events)
        actions = [e["action"] for e in events if e["type"] == "action"]
        self.assertEqual([(a["type"], a["phase"], a["name"]) for a in actions],
                         [("tool", "start", "echo"), ("tool", "result", "echo")], events)
        self.assertEqual(actions[1]["toolCallId"], "call_e")
        self.assertIn("from openvoiceui", actions[1]["result"])
        self.assertEqual(captured, actions, "captured_actions holds every action, in order")
        done = events[-1]
        self.assertEqual(done["type"], "text_done", self.host.logs())
        self.assertEqual(done["response"], "Let me echo that. Echoed it.")
        self.assertEqual(done["actions"], actions)

    def test_the_plugin_declares_tool_events(self):
        self.assertIn("tool-events", support.load_plugin_class().capabilities)


if __name__ == "__main__":
    unittest.main()
