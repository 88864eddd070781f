//! A request body documented as JSON but handed over unread.
//!
//! The signature covers the raw bytes, and the gateway decides when (and
//! whether) to read them and with which limits, so this payload type does
//! not parse: it only carries the body, while the OpenAPI document shows
//! the JSON schema of `T`.

use std::marker::PhantomData;
use std::time::Duration;

use poem::{Body, Request, RequestBody};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use tokio::io::AsyncReadExt;

use crate::gateway::BodyError;

pub struct SignedJson<T> {
    body: Body,
    content_length: Option<u64>,
    _schema: PhantomData<fn() -> T>,
}

impl<T: Type> Payload for SignedJson<T> {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(content_type: &str) -> bool {
        // The common spelling first, without parsing.
        content_type.eq_ignore_ascii_case(Self::CONTENT_TYPE)
            || matches!(content_type.parse::<mime::Mime>(), Ok(m)
            if m.type_() == "application" && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json")))
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type> ParsePayload for SignedJson<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let content_length = request
            .headers()
            .get(poem::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(Self {
            body: body.take()?,
            content_length,
            _schema: PhantomData,
        })
    }
}

poem_openapi::impl_apirequest_for_payload!(SignedJson<T>, T: Type);

impl<T> SignedJson<T> {
    /// Reads at most `limit` bytes within `timeout`. A declared length over
    /// the limit is refused before reading; a body that turns out longer
    /// (chunked, or lying) is cut off at `limit + 1` bytes, so memory stays
    /// bounded whatever the client says.
    pub async fn read(self, limit: usize, timeout: Duration) -> Result<Vec<u8>, BodyError> {
        if self.content_length.is_some_and(|n| n > limit as u64) {
            return Err(BodyError::TooLarge);
        }
        let capacity = self.content_length.map_or(1024, |n| n as usize);
        let mut bytes = Vec::with_capacity(capacity);
        let mut reader = self.body.into_async_read().take(limit as u64 + 1);
        match tokio::time::timeout(timeout, reader.read_to_end(&mut bytes)).await {
            Err(_) => Err(BodyError::TimedOut),
            Ok(Err(_)) => Err(BodyError::Broken),
            Ok(Ok(_)) if bytes.len() > limit => Err(BodyError::TooLarge),
            Ok(Ok(_)) => Ok(bytes),
        }
    }
}
