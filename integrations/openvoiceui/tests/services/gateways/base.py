"""Test stand-in for OpenVoiceUI's services/gateways/base.py.

Only what the plugin and the tests rely on; OpenVoiceUI's real class has the
same attributes and method names (plus admin-panel extras).
"""

import queue
from typing import Optional


class GatewayBase:
    gateway_id: str = "unnamed"
    persistent: bool = False
    capabilities = frozenset({"streaming"})

    def is_configured(self) -> bool:
        raise NotImplementedError

    def stream_to_queue(self, event_queue: queue.Queue, message: str, session_key: str,
                        captured_actions: Optional[list] = None, **kwargs) -> None:
        raise NotImplementedError

    def is_healthy(self) -> bool:
        return self.is_configured()

    def shutdown(self) -> None:
        pass
