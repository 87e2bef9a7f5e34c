//! Reading requests, decided once for both APIs: JSON bodies within the body limit, path
//! segments and session keys. Every failure is an [`ApiError`].

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, Request};
use axum::http::StatusCode;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::turn;

/// A JSON body extractor whose rejections are [`ApiError`]s (never axum's plain text). It does
/// not insist on a `Content-Type` header.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        decode_json(&bytes).map(JsonBody)
    }
}

/// Like [`JsonBody`], but an empty (or all-whitespace) body is `None`.
#[derive(Debug, Clone)]
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
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
    Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::bad_request(r.body_text())
        }
    })
}

/// Not JSON is `invalid_json`; JSON of the wrong shape is [`ApiError::WrongShape`].
fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            ApiError::WrongShape(e.to_string())
        } else {
            ApiError::InvalidJson(e.to_string())
        }
    })
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
