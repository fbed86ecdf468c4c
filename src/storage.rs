//! Object stores behind table locations.
//!
//! Local paths need nothing. `s3://bucket/...` URLs get an S3 store built from
//! the standard AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, …)
//! through object_store's own `from_env`, registered once per bucket.

use std::sync::Arc;

use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::SessionContext;
use object_store::aws::AmazonS3Builder;
use url::Url;

use crate::error::{Error, Result};

/// Makes sure `ctx` has an object store for `url`'s scheme and bucket.
pub fn ensure_store(ctx: &SessionContext, url: &Url) -> Result<()> {
    match url.scheme() {
        "file" => Ok(()),
        "s3" | "s3a" => {
            let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
                Error::invalid(format!(
                    "{url}: an S3 URL needs a bucket (s3://bucket/prefix)"
                ))
            })?;
            let base = Url::parse(&format!("{}://{bucket}", url.scheme()))
                .map_err(|e| Error::invalid(format!("{url}: {e}")))?;
            let store_url = ObjectStoreUrl::parse(base.as_str())?;
            if ctx.runtime_env().object_store(&store_url).is_ok() {
                return Ok(());
            }
            let store = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()?;
            ctx.register_object_store(&base, Arc::new(store));
            Ok(())
        }
        other => Err(Error::invalid(format!(
            "{url}: unsupported storage scheme `{other}` (use a local path or s3://bucket/prefix)"
        ))),
    }
}
