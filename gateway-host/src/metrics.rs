//! Prometheus metrics: requests, errors by cause, time to first token, streams in flight,
//! fallbacks and retries.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    profile: String,
    gateway: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    gateway: String,
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    from: String,
    to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemoryLabels {
    what: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GatewayLabels {
    gateway: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    server: String,
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolErrorLabels {
    server: String,
    tool: String,
    cause: String,
}

type ToolHistogramFamily = Family<ToolLabels, Histogram, fn() -> Histogram>;

fn tool_histogram() -> Histogram {
    Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
}

type HistogramFamily = Family<GatewayLabels, Histogram, fn() -> Histogram>;

fn ttft_histogram() -> Histogram {
    Histogram::new([
        0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
    ])
}

/// The host's metrics. Label values come from configured ids only (never raw request input).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    ttft: HistogramFamily,
    in_flight: Gauge,
    fallbacks: Family<FallbackLabels, Counter>,
    retries: Family<ErrorLabels, Counter>,
    memory_not_stored: Family<MemoryLabels, Counter>,
    tool_calls: Family<ToolLabels, Counter>,
    tool_errors: Family<ToolErrorLabels, Counter>,
    tool_seconds: ToolHistogramFamily,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gateway_host");
        let requests = Family::<RequestLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let ttft: HistogramFamily = Family::new_with_constructor(ttft_histogram);
        let in_flight = Gauge::default();
        let fallbacks = Family::<FallbackLabels, Counter>::default();
        let retries = Family::<ErrorLabels, Counter>::default();
        let memory_not_stored = Family::<MemoryLabels, Counter>::default();
        let tool_calls = Family::<ToolLabels, Counter>::default();
        let tool_errors = Family::<ToolErrorLabels, Counter>::default();
        let tool_seconds: ToolHistogramFamily = Family::new_with_constructor(tool_histogram);
        registry.register(
            "requests",
            "Conversation turns sent to a gateway, by profile and gateway (a turn that fails over counts once on each gateway it tries)",
            requests.clone(),
        );
        registry.register(
            "errors",
            "Failed turns and rejected requests, by gateway and cause",
            errors.clone(),
        );
        registry.register(
            "ttft_seconds",
            "Time from request start to the first token, by gateway",
            ttft.clone(),
        );
        registry.register(
            "in_flight_streams",
            "Response streams currently open",
            in_flight.clone(),
        );
        registry.register(
            "fallbacks",
            "Turns moved to a profile's next gateway before the first token, by gateway",
            fallbacks.clone(),
        );
        registry.register(
            "retries",
            "Retries of the same gateway after a Retry-After, by gateway and cause",
            retries.clone(),
        );
        registry.register(
            "memory_not_stored",
            "Session memory writes given up on (the store stayed unreachable): `turn` (the client was told in text_done) or `interrupted` (a cut turn's kept part)",
            memory_not_stored.clone(),
        );
        registry.register(
            "tool_calls",
            "Tool calls the host ran for a model, by MCP server and tool",
            tool_calls.clone(),
        );
        registry.register(
            "tool_errors",
            "Tool calls that failed, by MCP server, tool and cause (timeout, tool_error, ...)",
            tool_errors.clone(),
        );
        registry.register(
            "tool_call_seconds",
            "Duration of tool calls, by MCP server and tool",
            tool_seconds.clone(),
        );
        Self {
            registry,
            requests,
            errors,
            ttft,
            in_flight,
            fallbacks,
            retries,
            memory_not_stored,
            tool_calls,
            tool_errors,
            tool_seconds,
        }
    }

    /// Count a started turn.
    pub fn request(&self, profile: &str, gateway: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                profile: profile.into(),
                gateway: gateway.into(),
            })
            .inc();
    }

    /// Count an error (`cause` from `GatewayError::cause` or a request error code).
    pub fn error(&self, gateway: &str, cause: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                gateway: gateway.into(),
                cause: cause.into(),
            })
            .inc();
    }

    /// Count a turn moved from one gateway to the next before its first token.
    pub fn fallback(&self, from: &str, to: &str) {
        self.fallbacks
            .get_or_create(&FallbackLabels {
                from: from.into(),
                to: to.into(),
            })
            .inc();
    }

    /// Count a retry of the same gateway (`cause` from `GatewayError::cause`).
    pub fn retry(&self, gateway: &str, cause: &str) {
        self.retries
            .get_or_create(&ErrorLabels {
                gateway: gateway.into(),
                cause: cause.into(),
            })
            .inc();
    }

    /// Count a session memory write given up on: `turn` or `interrupted`.
    pub fn memory_not_stored(&self, what: &str) {
        self.memory_not_stored_counter(what).inc();
    }

    /// The counter behind [`Metrics::memory_not_stored`], for parts that count on their own.
    pub fn memory_not_stored_counter(&self, what: &str) -> Counter {
        self.memory_not_stored
            .get_or_create(&MemoryLabels { what: what.into() })
            .clone()
    }

    /// Record a time to first token.
    pub fn ttft(&self, gateway: &str, ttft: Duration) {
        self.ttft
            .get_or_create(&GatewayLabels {
                gateway: gateway.into(),
            })
            .observe(ttft.as_secs_f64());
    }

    /// Count a finished tool call, its duration and, when it failed, its cause.
    pub fn tool_call(&self, server: &str, tool: &str, elapsed: Duration, error: Option<&str>) {
        let labels = ToolLabels {
            server: server.into(),
            tool: tool.into(),
        };
        self.tool_calls.get_or_create(&labels).inc();
        self.tool_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if let Some(cause) = error {
            self.tool_errors
                .get_or_create(&ToolErrorLabels {
                    server: labels.server,
                    tool: labels.tool,
                    cause: cause.into(),
                })
                .inc();
        }
    }

    /// A guard counting one open stream until dropped.
    pub fn stream_open(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Decrements the in-flight gauge when dropped.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.request("default", "openai-compat");
        m.error("openai-compat", "http_429");
        m.ttft("openai-compat", Duration::from_millis(120));
        m.fallback("groq", "ollama");
        m.retry("groq", "http_429");
        m.memory_not_stored("turn");
        m.tool_call("time", "get_current_time", Duration::from_millis(40), None);
        m.tool_call(
            "time",
            "get_current_time",
            Duration::from_millis(9),
            Some("timeout"),
        );
        let guard = m.stream_open();
        let text = m.render();
        assert!(text.contains(
            r#"gateway_host_requests_total{profile="default",gateway="openai-compat"} 1"#
        ));
        assert!(text.contains(r#"cause="http_429""#));
        assert!(text.contains("gateway_host_ttft_seconds_bucket"));
        assert!(text.contains(r#"gateway_host_fallbacks_total{from="groq",to="ollama"} 1"#));
        assert!(text.contains(r#"gateway_host_retries_total{gateway="groq",cause="http_429"} 1"#));
        assert!(text.contains("gateway_host_in_flight_streams 1"));
        assert!(text.contains(r#"gateway_host_memory_not_stored_total{what="turn"} 1"#));
        assert!(text
            .contains(r#"gateway_host_tool_calls_total{server="time",tool="get_current_time"} 2"#));
        assert!(text.contains(
            r#"gateway_host_tool_errors_total{server="time",tool="get_current_time",cause="timeout"} 1"#
        ));
        assert!(text.contains("gateway_host_tool_call_seconds_count"));
        drop(guard);
        assert!(m.render().contains("gateway_host_in_flight_streams 0"));
    }
}
