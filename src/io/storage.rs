//! Object stores behind table locations.
//!
//! Local paths need nothing. `s3://bucket/...` URLs get an S3 store built from
//! the standard AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, …)
//! through object_store's own `from_env`, registered once per bucket. Values
//! from the config file's `[storage.s3]` (kept in the session config as an
//! extension, see [`S3Config`]) override the environment. A custom endpoint
//! gets path-style requests unless `virtual_hosted_style` is set, which is
//! what local S3-compatible servers need. AWS profiles (`~/.aws/config`) are
//! not read: object_store does not support them; export the profile's keys
//! or use the config file.

use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::SessionContext;
use object_store::aws::AmazonS3Builder;
use url::Url;

use crate::error::{Error, Result};
use crate::settings::config::S3Config;

/// Makes sure `ctx` has an object store for `url`'s scheme and bucket.
pub fn ensure_store(ctx: &SessionContext, url: &Url) -> Result<()> {
    match url.scheme() {
        "file" => Ok(()),
        "s3" | "s3a" => {
            let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
                Error::location(url, "an S3 URL needs a bucket (s3://bucket/prefix)")
            })?;
            let base = Url::parse(&format!("{}://{bucket}", url.scheme()))
                .map_err(|e| Error::location(url, e.to_string()))?;
            let store_url = ObjectStoreUrl::parse(base.as_str())?;
            if ctx.runtime_env().object_store(&store_url).is_ok() {
                return Ok(());
            }
            let settings = ctx
                .state()
                .config()
                .get_extension::<S3Config>()
                .map(|s| (*s).clone())
                .unwrap_or_default();
            let store = s3_builder(&settings)?.with_bucket_name(bucket).build()?;
            ctx.register_object_store(&base, Arc::new(store));
            Ok(())
        }
        other => Err(Error::location(
            url,
            format!(
                "unsupported storage scheme `{other}` (use a local path or s3://bucket/prefix)"
            ),
        )),
    }
}

/// An S3 builder from the environment, overridden by `settings`. Requests
/// that fail in a way worth retrying (5xx such as `503 SlowDown`, timeouts,
/// connection resets, a body cut short) are retried by object_store with
/// exponential backoff, as `max_retries` and `retry_timeout` allow.
pub fn s3_builder(settings: &S3Config) -> Result<AmazonS3Builder> {
    let mut b = AmazonS3Builder::from_env();
    let durations = settings.durations()?;
    let mut retry = object_store::RetryConfig::default();
    if let Some(n) = settings.max_retries {
        retry.max_retries = n;
    }
    if let Some(d) = durations.retry_timeout {
        retry.retry_timeout = d;
    }
    b = b.with_retry(retry);
    // Through the config keys, which change only these two of the client
    // options the environment may already have set (AWS_ALLOW_HTTP, …).
    use object_store::aws::AmazonS3ConfigKey;
    use object_store::ClientConfigKey;
    if let (Some(_), Some(text)) = (durations.timeout, &settings.timeout) {
        b = b.with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), text);
    }
    if let (Some(_), Some(text)) = (durations.connect_timeout, &settings.connect_timeout) {
        b = b.with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            text,
        );
    }
    if let Some(v) = &settings.region {
        b = b.with_region(v);
    }
    if let Some(v) = &settings.endpoint {
        b = b.with_endpoint(v);
    }
    if let Some(v) = &settings.access_key_id {
        b = b.with_access_key_id(v);
    }
    if let Some(v) = &settings.secret_access_key {
        b = b.with_secret_access_key(v);
    }
    if let Some(v) = &settings.session_token {
        b = b.with_token(v);
    }
    if let Some(v) = settings.allow_http {
        b = b.with_allow_http(v);
    }
    if let Some(v) = settings.virtual_hosted_style {
        b = b.with_virtual_hosted_style_request(v);
    }
    Ok(b)
}

/// Explains an object-store failure listing `location` when S3 refused
/// it: an [`Error::S3`] for refused credentials and for a missing bucket
/// (listing a missing prefix is not an error, so "not found" there means
/// the bucket), `None` for anything else.
///
/// object_store types the HTTP status of object requests
/// (`PermissionDenied`, `NotFound`) but wraps a failed listing as `Generic`
/// with S3's response quoted in its message, and its retry error type is
/// private: for listings S3's `<Code>` in that message is all there is.
pub fn explain_listing_error(location: &str, e: &DataFusionError) -> Option<Error> {
    let DataFusionError::ObjectStore(e) = e.find_root() else {
        return None;
    };
    let code = s3_code(&e.to_string());
    let denied = matches!(
        code.as_deref(),
        Some("AccessDenied" | "SignatureDoesNotMatch" | "InvalidAccessKeyId" | "ExpiredToken")
    );
    let problem = match e.as_ref() {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => access_denied(code.as_deref()),
        _ if denied => access_denied(code.as_deref()),
        object_store::Error::NotFound { .. } => "the bucket does not exist".to_string(),
        _ if code.as_deref() == Some("NoSuchBucket") => {
            "the bucket does not exist (NoSuchBucket)".to_string()
        }
        _ => return None,
    };
    Some(Error::S3 {
        location: location.to_string(),
        code,
        problem,
    })
}

fn access_denied(code: Option<&str>) -> String {
    format!(
        "access denied ({}): check the credentials (AWS_ACCESS_KEY_ID / \
         AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or [storage.s3])",
        code.unwrap_or("HTTP 401/403")
    )
}

/// The `<Code>` of an S3 error response quoted in an error's message.
fn s3_code(text: &str) -> Option<String> {
    let start = text.find("<Code>")? + "<Code>".len();
    let end = text[start..].find("</Code>")? + start;
    Some(text[start..end].to_string())
}
