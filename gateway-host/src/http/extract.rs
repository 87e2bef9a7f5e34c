//! Reading requests, decided once for both APIs: JSON bodies (sent as `application/json`,
//! within the body limit and the body-read timeout), path segments and session keys. Every
//! failure is an [`ApiError`].

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, Request};
use axum::http::{header, HeaderMap, StatusCode};
use bytes::Bytes;
use serde::de::{DeserializeOwned, IgnoredAny};

use super::error::ApiError;
use super::server::service::BodyTimeout;
use crate::turn;

/// A JSON body extractor whose rejections are [`ApiError`]s (never axum's plain text). The
/// body must be sent as `application/json` (415 otherwise): a web page can send `text/plain`
/// to any address without asking, but JSON only after a CORS preflight.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_json_type(req.headers(), true)?;
        let bytes = body_bytes(req, state).await?;
        decode_json(&bytes).map(JsonBody)
    }
}

/// Like [`JsonBody`], but an empty (or all-whitespace) body is `None`, and a request without
/// a body needs no `Content-Type`.
#[derive(Debug, Clone)]
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let typed = check_json_type(req.headers(), false)?;
        let bytes = body_bytes(req, state).await?;
        if !typed && !bytes.is_empty() {
            return Err(ApiError::UnsupportedMediaType("no content type".into()));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        decode_json(&bytes).map(|v| OptionalJsonBody(Some(v)))
    }
}

/// The configured body limit, put in request extensions for error messages.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .map(|l| l.0)
        .unwrap_or_default();
    if declared_length(req.headers()).is_some_and(|length| limit > 0 && length > limit) {
        // Refused before a byte is read: a client that sent `Expect: 100-continue` gets no
        // `100 Continue`, and none uploads a body that could never be taken.
        return Err(ApiError::PayloadTooLarge(limit));
    }
    Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(limit)
        } else if let Some(timeout) = body_timeout(&r) {
            ApiError::RequestTimeout(timeout.0.as_millis() as u64)
        } else {
            ApiError::bad_request(r.body_text())
        }
    })
}

/// The body's length as its `Content-Length` header declares it, when it does.
fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The body-read timeout behind a failed body, if that is what failed.
fn body_timeout<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyTimeout> {
    gateway_core::error::causes(error).find_map(|e| e.downcast_ref::<BodyTimeout>())
}

/// `Ok(true)` when the request says its body is JSON (`application/json` or `…+json`, any
/// parameters); `Ok(false)` when it names no type and `required` is false; else a 415.
fn check_json_type(headers: &HeaderMap, required: bool) -> Result<bool, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return match required {
            true => Err(ApiError::UnsupportedMediaType("no content type".into())),
            false => Ok(false),
        };
    };
    let text = value.to_str().unwrap_or_default();
    let essence = text.split(';').next().unwrap_or_default().trim();
    let essence = essence.to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json {
        return Ok(true);
    }
    let shown: String = text.chars().take(64).collect();
    Err(ApiError::UnsupportedMediaType(format!("'{shown}'")))
}

/// Not JSON is `invalid_json`; JSON of the wrong shape is [`ApiError::WrongShape`]. A body
/// that is not an object at all is refused as such before serde sees it: serde would read an
/// array's items as the fields in order (`["hi"]` as `{"message": "hi"}`).
fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if let Some(kind) = not_an_object(bytes) {
        return Err(match serde_json::from_slice::<IgnoredAny>(bytes) {
            Ok(_) => ApiError::WrongShape(format!(
                "the body must be a JSON object ({{...}}), not {kind}"
            )),
            Err(e) => ApiError::InvalidJson(e.to_string()),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            ApiError::WrongShape(e.to_string())
        } else {
            ApiError::InvalidJson(e.to_string())
        }
    })
}

/// What a JSON document is, by its first byte, when it is not an object.
fn not_an_object(json: &[u8]) -> Option<&'static str> {
    let first = json.iter().find(|b| !b.is_ascii_whitespace())?;
    match first {
        b'{' => None,
        b'[' => Some("an array"),
        b'"' => Some("a string"),
        b't' | b'f' => Some("a boolean"),
        b'n' => Some("null"),
        _ => Some("a number"),
    }
}

/// A path segment, or a 400 when it cannot be decoded.
pub fn path_param(segment: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    segment
        .map(|Path(value)| value)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// `key` when it is a valid session key, else a 400 naming `param`.
pub fn session_key(key: String, param: &str) -> Result<String, ApiError> {
    turn::check_session_key(&key).map_err(|e| ApiError::from(e).at(param))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Turn {
        #[allow(dead_code)]
        message: String,
    }

    fn shape_error(body: &str) -> String {
        match decode_json::<Turn>(body.as_bytes()) {
            Err(ApiError::WrongShape(message)) => message,
            other => panic!("{body}: expected a wrong-shape error, got {other:?}"),
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_is_named_as_such() {
        for (body, kind) in [
            ("[1, 2]", "an array"),
            (" [\"hi\"]", "an array"),
            ("\"hi\"", "a string"),
            ("42", "a number"),
            ("-1.5", "a number"),
            ("true", "a boolean"),
            ("null", "null"),
        ] {
            assert_eq!(
                shape_error(body),
                format!("the body must be a JSON object ({{...}}), not {kind}")
            );
        }
    }

    #[test]
    fn an_object_of_the_wrong_shape_keeps_serdes_message_and_broken_json_is_invalid() {
        assert!(shape_error(r#"{"message": 42}"#).contains("invalid type: integer `42`"));
        for broken in ["[1,", "tru", "", "\"open"] {
            assert!(
                matches!(
                    decode_json::<Turn>(broken.as_bytes()),
                    Err(ApiError::InvalidJson(_))
                ),
                "{broken}"
            );
        }
    }
}
