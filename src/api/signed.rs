//! The signature, declared once: the extractors of the signed operations.
//!
//! Each carries the signing headers as sent and what they sign, and
//! registers the `signature` and `oidc` security schemes (either
//! authenticates), so every signed operation shows them in the document
//! without declaring the headers itself.
//! - [`SignedBody`]: a JSON body, documented with the schema of `T` but
//!   handed over unread, since the signature covers its raw bytes and the
//!   gateway decides when (and whether) to read them, with which limits.
//! - [`SignedTarget`]: no body; the request target is what is signed.

use std::marker::PhantomData;
use std::time::Duration;

use poem::http::HeaderName;
use poem::{Body, Request, RequestBody};
use poem_openapi::error::ContentTypeError;
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSecurityScheme, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use tokio::io::AsyncReadExt;

use crate::gateway::{BodyError, SignedHeaders};

/// The security scheme's name in the document.
const SCHEME: &str = "signature";

const SCHEME_DESCRIPTION: &str = "HMAC-SHA256 request signing. `X-Signature` is the hex MAC (optionally prefixed `sha256=`) keyed with one of the project's secrets, over the raw request body (for a `GET`, the request target: path and query exactly as sent) immediately followed by the `X-Timestamp` header: the Unix time in seconds, decimal digits without leading zeros, within the gateway's tolerance of its clock. `X-Project` names the project: optional on `POST`, required on `GET`.";

/// The name of the other scheme: a CI's OpenID Connect token.
const TOKEN_SCHEME: &str = "oidc";

const TOKEN_SCHEME_DESCRIPTION: &str = "An OpenID Connect ID token from CI (GitHub Actions, GitLab CI, or another issuer a project's `oidc` rules name), as `Authorization: Bearer <JWT>` in place of `X-Timestamp` and `X-Signature` (a request with `X-Signature` is judged by its signature). RS256 or ES256, with `iss`, `aud`, `exp`, `iat` and `jti`; at most 8192 bytes. On `POST` a token is single-use: the same token again gets the first request's job. `X-Project` is optional on `POST`, required on `GET`.";

/// Both schemes; an operation takes either.
const SCHEMES: [&str; 2] = [SCHEME, TOKEN_SCHEME];

fn register_scheme(registry: &mut Registry) {
    registry.create_security_scheme(
        SCHEME,
        MetaSecurityScheme {
            ty: "apiKey",
            description: Some(SCHEME_DESCRIPTION),
            name: Some("X-Signature"),
            key_in: Some("header"),
            scheme: None,
            bearer_format: None,
            flows: None,
            openid_connect_url: None,
        },
    );
    registry.create_security_scheme(
        TOKEN_SCHEME,
        MetaSecurityScheme {
            ty: "http",
            description: Some(TOKEN_SCHEME_DESCRIPTION),
            name: None,
            key_in: None,
            scheme: Some("bearer"),
            bearer_format: Some("JWT"),
            flows: None,
            openid_connect_url: None,
        },
    );
}

/// Stands in for a header value that is not text; it fails every check.
const UNREADABLE: &str = "\u{fffd}";

/// The signing headers as sent. A value that is not visible ASCII is kept
/// as unreadable rather than dropped: it must be refused as malformed, not
/// as missing.
fn signing_headers(request: &Request) -> SignedHeaders<'_> {
    static TIMESTAMP: HeaderName = HeaderName::from_static("x-timestamp");
    static SIGNATURE: HeaderName = HeaderName::from_static("x-signature");
    static PROJECT: HeaderName = HeaderName::from_static("x-project");
    static AUTHORIZATION: HeaderName = poem::http::header::AUTHORIZATION;
    let text = |name: &HeaderName| {
        request
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or(UNREADABLE))
    };
    SignedHeaders {
        timestamp: text(&TIMESTAMP),
        signature: text(&SIGNATURE),
        project: text(&PROJECT),
        bearer: text(&AUTHORIZATION).and_then(bearer_token),
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme's
/// case is free). Other schemes, such as a proxy's Basic, are not this
/// gateway's and are left alone.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_matches(' '))
}

/// A signed request with a JSON body, unread.
pub struct SignedBody<'a, T> {
    pub headers: SignedHeaders<'a>,
    body: Body,
    content_length: Option<u64>,
    _schema: PhantomData<fn() -> T>,
}

const JSON: &str = "application/json";

/// `application/json`, or any `application/…+json`; the common spelling
/// first, without parsing.
fn is_json(content_type: &str) -> bool {
    content_type.eq_ignore_ascii_case(JSON)
        || matches!(content_type.parse::<mime::Mime>(), Ok(m)
            if m.type_() == "application" && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json")))
}

impl<'a, T: Type> ApiExtractor<'a> for SignedBody<'a, T> {
    const TYPES: &'static [ApiExtractorType] = &[
        ApiExtractorType::RequestObject,
        ApiExtractorType::SecurityScheme,
    ];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
        register_scheme(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        SCHEMES.to_vec()
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: JSON,
                schema: T::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _options: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        match request.content_type() {
            Some(content_type) if is_json(content_type) => {}
            Some(content_type) => {
                return Err(ContentTypeError::NotSupported {
                    content_type: content_type.to_owned(),
                }
                .into());
            }
            None => return Err(ContentTypeError::ExpectContentType.into()),
        }
        let content_length = request
            .headers()
            .get(poem::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(Self {
            headers: signing_headers(request),
            body: body.take()?,
            content_length,
            _schema: PhantomData,
        })
    }
}

impl<T> SignedBody<'_, T> {
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

/// A signed request without a body: its target (path and query exactly as
/// received) is the signed message.
pub struct SignedTarget<'a> {
    pub headers: SignedHeaders<'a>,
    pub target: &'a str,
}

impl<'a> ApiExtractor<'a> for SignedTarget<'a> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        register_scheme(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        SCHEMES.to_vec()
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut RequestBody,
        _options: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        let target = request
            .uri()
            .path_and_query()
            .map_or(request.uri().path(), |pq| pq.as_str());
        Ok(Self {
            headers: signing_headers(request),
            target,
        })
    }
}
