//! The HTTP layer's one error type, [`ApiError`], and its two renderings: the host's
//! `{"error": {"code", "message"}}` (`ApiError` as a response) and OpenAI's
//! `{"error": {"message", "type", "param", "code"}}` ([`OpenAiError`]). What went wrong is
//! decided once; only the status, code and wording differ between the two.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::turn::limits::Refusal;
use crate::turn::TurnError;

/// Longest profile id echoed back in OpenAI's `model_not_found` message.
const MAX_ECHOED_MODEL: usize = 100;

/// Why a request failed. As a response it is the host's error; wrap it in `OpenAiError`
/// for OpenAI's.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 400: an invalid value. `code` is a precise code (`missing_required_parameter`, ...)
    /// or, when `None`, each rendering's generic one; `param` names the parameter at fault.
    #[error("{message}")]
    Invalid {
        /// Precise code, when there is one.
        code: Option<&'static str>,
        /// The offending parameter (`messages[1].content[0].type`), when known.
        param: Option<String>,
        /// Details.
        message: String,
    },
    /// 400 `invalid_json`: the body is not JSON.
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    /// Well-formed JSON of the wrong shape: 422 for the host, 400 for OpenAI.
    #[error("invalid request: {0}")]
    WrongShape(String),
    /// 413: body over `limits.max_body_bytes`.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// A malformed profile id: 400 for the host, 404 `model_not_found` for OpenAI.
    #[error("invalid profile id (expected 1-64 of a-z, 0-9, -)")]
    BadProfileId(String),
    /// 404: no profile has this id.
    #[error("unknown profile '{0}'")]
    UnknownProfile(String),
    /// 404 of anything else.
    #[error("{message}")]
    NotFound {
        /// Stable code (`unknown_session`, `not_found`).
        code: &'static str,
        /// Details.
        message: String,
    },
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the request does not fit the current state (e.g. nothing to interrupt).
    #[error("{message}")]
    Conflict {
        /// Stable code (`not_in_flight`).
        code: &'static str,
        /// Details.
        message: String,
    },
    /// 503: the gateway or the store cannot serve.
    #[error("{message}")]
    Unavailable {
        /// Stable code (`gateway_unavailable`, `store_unavailable`).
        code: &'static str,
        /// Details, never a secret.
        message: String,
    },
    /// 502 `upstream_error`: the upstream failed a turn that was answered as a whole.
    #[error("{0}")]
    Upstream(String),
    /// 503 `overloaded`/`shutting_down` or 429 `session_busy`, with `Retry-After`.
    #[error(transparent)]
    Refused(Refusal),
    /// 415 `unsupported_media_type`: a body that is not sent as `application/json`.
    #[error("send the request body as application/json (got {0})")]
    UnsupportedMediaType(String),
    /// 403 `origin_not_allowed`: a browser request from a web origin not allowed to call.
    #[error("requests from origin '{0}' are not allowed (cors.allowed_origins)")]
    OriginNotAllowed(String),
    /// 408 `request_timeout`: the request body did not arrive in time.
    #[error("the request body did not arrive within {0} ms")]
    RequestTimeout(u64),
    /// 400 `malformed_request`: the request line or headers cannot be parsed.
    #[error("malformed request: the request line or headers cannot be parsed")]
    MalformedRequest,
    /// 414 `uri_too_long`.
    #[error("the request target is too long")]
    UriTooLong,
    /// 431 `headers_too_large`: the request head is over this many bytes.
    #[error("the request line and headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
}

impl ApiError {
    /// A 400 with the generic code and no parameter.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::invalid(None, None, message)
    }

    /// A 400 with an optional precise code and the parameter at fault.
    pub fn invalid(
        code: Option<&'static str>,
        param: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        ApiError::Invalid {
            code,
            param: param.map(str::to_string),
            message: message.into(),
        }
    }

    /// The same error naming `param` as the one at fault (only a 400 names one).
    pub fn at(self, param: &str) -> Self {
        match self {
            ApiError::Invalid { code, message, .. } => Self::invalid(code, Some(param), message),
            other => other,
        }
    }

    /// Status and `code` of the host's rendering.
    fn host(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Invalid { code, .. } => {
                (StatusCode::BAD_REQUEST, code.unwrap_or("bad_request"))
            }
            ApiError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::WrongShape(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            ApiError::BadProfileId(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::UnknownProfile(_) => (StatusCode::NOT_FOUND, "unknown_profile"),
            other => (other.status(), other.code()),
        }
    }

    /// Status, `type`, `code` and `param` of OpenAI's rendering.
    fn openai(&self) -> OpenAiParts<'_> {
        let (status, code, param) = match self {
            ApiError::Invalid { code, param, .. } => (
                StatusCode::BAD_REQUEST,
                code.unwrap_or("invalid_value"),
                param.as_deref(),
            ),
            ApiError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json", None),
            ApiError::WrongShape(_) => (StatusCode::BAD_REQUEST, "invalid_type", None),
            ApiError::BadProfileId(_) | ApiError::UnknownProfile(_) => {
                (StatusCode::NOT_FOUND, "model_not_found", Some("model"))
            }
            other => (other.status(), other.code(), None),
        };
        let kind = match status {
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        OpenAiParts {
            status,
            kind,
            code,
            param,
        }
    }

    /// Status and code where both renderings agree.
    fn status(&self) -> StatusCode {
        match self {
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Refused(refusal) => refusal.status(),
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::OriginNotAllowed(_) => StatusCode::FORBIDDEN,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UriTooLong => StatusCode::URI_TOO_LONG,
            ApiError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::NotFound { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Unavailable { code, .. } => code,
            ApiError::Upstream(_) => "upstream_error",
            ApiError::Refused(refusal) => refusal.code(),
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::OriginNotAllowed(_) => "origin_not_allowed",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::MalformedRequest => "malformed_request",
            ApiError::UriTooLong => "uri_too_long",
            ApiError::HeadersTooLarge(_) => "headers_too_large",
            _ => "bad_request",
        }
    }

    /// OpenAI's wording: an unknown or malformed profile is a model that does not exist.
    fn openai_message(&self) -> String {
        match self {
            ApiError::BadProfileId(id) | ApiError::UnknownProfile(id) => format!(
                "The model '{}' does not exist: no profile has this id (GET /v1/models lists them)",
                id.chars().take(MAX_ECHOED_MODEL).collect::<String>()
            ),
            other => other.to_string(),
        }
    }
}

/// One JSON error response, with `Retry-After` when the error is a refusal.
fn respond(status: StatusCode, body: String, error: &ApiError) -> Response {
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let ApiError::Refused(refusal) = error {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, refusal.retry_after_secs().into());
    }
    response
}

/// The host's body `{"error": {"code", "message"}}`.
#[derive(Serialize)]
struct HostBody<'a> {
    error: HostDetail<'a>,
}

#[derive(Serialize)]
struct HostDetail<'a> {
    code: &'static str,
    message: &'a str,
}

impl ApiError {
    /// Status and body of the host's rendering.
    pub fn host_json(&self) -> (StatusCode, String) {
        let (status, code) = self.host();
        let message = self.to_string();
        let body = HostBody {
            error: HostDetail {
                code,
                message: &message,
            },
        };
        (status, serde_json::to_string(&body).unwrap_or_default())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.host_json();
        respond(status, body, &self)
    }
}

impl From<TurnError> for ApiError {
    fn from(e: TurnError) -> Self {
        let code = e.code();
        match e {
            TurnError::BadRequest(message) => ApiError::bad_request(message),
            TurnError::BadProfileId(id) => ApiError::BadProfileId(id),
            TurnError::UnknownProfile(id) => ApiError::UnknownProfile(id),
            TurnError::GatewayUnavailable { .. } | TurnError::Store(_) => ApiError::Unavailable {
                code,
                message: e.to_string(),
            },
            TurnError::Refused(refusal) => ApiError::Refused(refusal),
        }
    }
}

impl From<gateway_core::StoreError> for ApiError {
    fn from(e: gateway_core::StoreError) -> Self {
        TurnError::Store(e).into()
    }
}

/// An [`ApiError`] rendered in OpenAI's shape, so OpenAI SDKs raise their usual exceptions.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiError(pub ApiError);

/// What OpenAI's rendering of an error shows besides the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenAiParts<'a> {
    /// HTTP status answered before a stream starts.
    pub status: StatusCode,
    /// OpenAI's `type` (`invalid_request_error`, `rate_limit_error`, `server_error`).
    pub kind: &'static str,
    /// OpenAI's `code`.
    pub code: &'static str,
    /// The parameter at fault, when known.
    pub param: Option<&'a str>,
}

/// OpenAI's body `{"error": {"message", "type", "param", "code"}}`, fields in OpenAI's order.
#[derive(Serialize)]
struct OpenAiBody<'a> {
    error: OpenAiDetail<'a>,
}

#[derive(Serialize)]
struct OpenAiDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: &'static str,
}

impl OpenAiError {
    /// Status, `type`, `code` and `param` of this rendering.
    pub fn parts(&self) -> OpenAiParts<'_> {
        self.0.openai()
    }

    /// The JSON body as text (also the in-stream error chunk).
    pub fn body_text(&self) -> String {
        let parts = self.parts();
        let message = self.0.openai_message();
        let body = OpenAiBody {
            error: OpenAiDetail {
                message: &message,
                kind: parts.kind,
                param: parts.param,
                code: parts.code,
            },
        };
        serde_json::to_string(&body).unwrap_or_default()
    }
}

impl std::fmt::Display for OpenAiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.openai_message())
    }
}

impl std::error::Error for OpenAiError {}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        respond(self.parts().status, self.body_text(), &self.0)
    }
}

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        OpenAiError(e)
    }
}

impl From<TurnError> for OpenAiError {
    fn from(e: TurnError) -> Self {
        OpenAiError(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_json(e: ApiError) -> (StatusCode, serde_json::Value, Option<String>) {
        let (status, _) = e.host();
        let response = e.into_response();
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let (parts, body) = (status, response.into_body());
        let bytes = futures::executor::block_on(axum::body::to_bytes(body, 1 << 16)).unwrap();
        (parts, serde_json::from_slice(&bytes).unwrap(), retry)
    }

    #[test]
    fn one_error_two_renderings() {
        let cases = [
            (
                ApiError::WrongShape("x".into()),
                (422, "invalid_request"),
                (400, "invalid_type"),
            ),
            (
                ApiError::BadProfileId("A".into()),
                (400, "bad_request"),
                (404, "model_not_found"),
            ),
            (
                ApiError::UnknownProfile("a".into()),
                (404, "unknown_profile"),
                (404, "model_not_found"),
            ),
            (
                ApiError::bad_request("x"),
                (400, "bad_request"),
                (400, "invalid_value"),
            ),
            (
                ApiError::PayloadTooLarge(9),
                (413, "payload_too_large"),
                (413, "payload_too_large"),
            ),
            (
                ApiError::Refused(Refusal::SessionBusy(1)),
                (429, "session_busy"),
                (429, "session_busy"),
            ),
            (
                ApiError::Refused(Refusal::ShuttingDown),
                (503, "shutting_down"),
                (503, "shutting_down"),
            ),
        ];
        for (error, host, openai) in cases {
            let (status, code) = error.host();
            assert_eq!((status.as_u16(), code), host, "{error:?}");
            let rendered = OpenAiError(error.clone());
            let parts = rendered.parts();
            assert_eq!((parts.status.as_u16(), parts.code), openai, "{error:?}");
        }
    }

    #[test]
    fn refusals_carry_retry_after_in_both_renderings() {
        let refused = ApiError::Refused(Refusal::Overloaded(2));
        let (status, body, retry) = host_json(refused.clone());
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "overloaded");
        assert_eq!(retry.as_deref(), Some("1"));
        let response = OpenAiError(refused).into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert!(host_json(ApiError::bad_request("x")).2.is_none());
    }

    #[test]
    fn openai_body_has_openai_shape() {
        let e = OpenAiError(ApiError::UnknownProfile("x".repeat(300)));
        let body: serde_json::Value = serde_json::from_str(&e.body_text()).unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "model_not_found");
        assert_eq!(body["error"]["param"], "model");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&"x".repeat(100)) && !message.contains(&"x".repeat(101)));
        let body: serde_json::Value =
            serde_json::from_str(&OpenAiError(ApiError::Upstream("boom".into())).body_text())
                .unwrap();
        assert_eq!(body["error"]["type"], "server_error");
        assert_eq!(body["error"]["param"], serde_json::Value::Null);
        assert_eq!(body["error"]["message"], "boom");
    }
}
