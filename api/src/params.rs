//! Reading a request's query string, path and JSON body so that every refusal is an
//! [`ApiError`] naming the parameter at fault: axum's own rejections (plain text) never reach
//! a client.
//!
//! A query string is read as name/value pairs and each parameter is taken and parsed by name;
//! a parameter the route does not know, or one given twice, is refused by name too.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// The query parameters of a request, taken one by one.
#[derive(Debug, Default)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|rejection: QueryRejection| ApiError::Rejected {
                status: axum::http::StatusCode::BAD_REQUEST,
                field: "query",
                message: rejection.body_text(),
            })?;
        Ok(Self { pairs })
    }
}

impl Params {
    /// The raw value of `name`, if given (once).
    ///
    /// # Errors
    /// When `name` is given more than once.
    pub(crate) fn text(&mut self, name: &'static str) -> Result<Option<String>, ApiError> {
        let mut found = None;
        let mut rest = Vec::with_capacity(self.pairs.len());
        for (key, value) in self.pairs.drain(..) {
            if key == name {
                if found.is_some() {
                    return Err(ApiError::bad(
                        name,
                        format!("{name} is given more than once"),
                    ));
                }
                found = Some(value);
            } else {
                rest.push((key, value));
            }
        }
        self.pairs = rest;
        if found.as_deref().is_some_and(|value| value.contains('\0')) {
            return Err(ApiError::bad(name, format!("{name} must not contain NUL")));
        }
        Ok(found)
    }

    /// `name` as an integer in `min..=max`, if given.
    ///
    /// # Errors
    /// When it is not an integer in range.
    pub(crate) fn int(
        &mut self,
        name: &'static str,
        min: i64,
        max: i64,
    ) -> Result<Option<i64>, ApiError> {
        let Some(text) = self.text(name)? else {
            return Ok(None);
        };
        match text.trim().parse::<i64>() {
            Ok(value) if (min..=max).contains(&value) => Ok(Some(value)),
            _ => Err(ApiError::bad(
                name,
                format!("{name} must be an integer between {min} and {max}, got {text:?}"),
            )),
        }
    }

    /// `name` as `true` or `false`, if given.
    ///
    /// # Errors
    /// When it is anything else.
    pub(crate) fn bool(&mut self, name: &'static str) -> Result<Option<bool>, ApiError> {
        match self.text(name)?.as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(ApiError::bad(
                name,
                format!("{name} must be true or false, got {other:?}"),
            )),
        }
    }

    /// Refuses any parameter not taken yet, naming it.
    ///
    /// # Errors
    /// When one is left.
    pub(crate) fn finish(self, known: &[&str]) -> Result<(), ApiError> {
        match self.pairs.first() {
            None => Ok(()),
            Some((key, _)) => Err(ApiError::bad(
                key.clone(),
                format!(
                    "unknown query parameter {key:?} (this route takes: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            )),
        }
    }
}

/// A path's parameters, or a 400 naming `field` when they do not decode.
pub(crate) struct PathOf<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathOf<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|rejection: PathRejection| ApiError::Rejected {
                status: axum::http::StatusCode::BAD_REQUEST,
                field: "path",
                message: rejection.body_text(),
            })
    }
}

/// A JSON body read as a [`serde_json::Value`]; the route checks its fields by name.
pub(crate) struct Body(pub(crate) serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        axum::Json::<serde_json::Value>::from_request(request, state)
            .await
            .map(|axum::Json(value)| Self(value))
            .map_err(|rejection: JsonRejection| ApiError::Rejected {
                status: rejection.status(),
                field: "body",
                message: rejection.body_text(),
            })
    }
}

impl Body {
    /// The body as an object, refusing keys outside `known`.
    ///
    /// # Errors
    /// When the body is not an object or has an unknown key.
    pub(crate) fn object(
        self,
        known: &[&str],
    ) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
        let serde_json::Value::Object(map) = self.0 else {
            return Err(ApiError::bad("body", "the body must be a JSON object"));
        };
        if let Some(key) = map.keys().find(|key| !known.contains(&key.as_str())) {
            return Err(ApiError::bad(
                key.clone(),
                format!(
                    "unknown field {key:?} (this route takes: {})",
                    known.join(", ")
                ),
            ));
        }
        Ok(map)
    }
}
