//! Opening where files go by URL: a local folder (a plain path or `file://`) or an S3-compatible
//! bucket (`s3://bucket/prefix`). The archive ([`crate::archive`]) and `dwh export` both write
//! through it; what they write is theirs.
//!
//! S3 credentials and the endpoint come from the usual `AWS_*` variables. Without any source of
//! credentials a bucket is refused at once: object_store would otherwise ask the EC2 metadata
//! service, which outside EC2 fails late and with an unrelated-looking error.

use std::sync::Arc;

use crate::error::{bail, Context, Error, Result};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStore;

use crate::mask_url;

/// A folder or bucket opened by URL (cheap to clone: the store is shared).
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
}

impl Bucket {
    /// Open `url` to write to; a folder is created if missing. `what` names it in errors
    /// ("archive", "export").
    pub fn open(url: &str, what: &str) -> Result<Bucket> {
        match Location::of(url, what)? {
            Location::Bucket => Bucket::s3(url, what),
            Location::Folder(folder) => {
                std::fs::create_dir_all(folder)
                    .with_context(|| format!("creating the {what} folder {folder}"))?;
                Bucket::folder(url, folder, what)
            }
        }
    }

    /// Open `url` to read from: like [`Bucket::open`], but a folder must exist already (reading
    /// never creates one); `expected` says what it should be.
    pub fn open_existing(url: &str, what: &str, expected: &str) -> Result<Bucket> {
        match Location::of(url, what)? {
            Location::Bucket => Bucket::s3(url, what),
            Location::Folder(folder) => match std::fs::metadata(folder) {
                Ok(meta) if meta.is_dir() => Bucket::folder(url, folder, what),
                Ok(_) => bail!("the {what} {folder} is a file, not a folder: {expected}"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    bail!("the {what} folder {folder} does not exist: {expected}")
                }
                Err(e) => Err(e).with_context(|| format!("reading the {what} folder {folder}")),
            },
        }
    }

    fn s3(url: &str, what: &str) -> Result<Bucket> {
        let shown = mask_url(url);
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::invalid(format!("bad {what} URL {shown}: {e}")))?;
        if !s3_credentials_configured() {
            bail!(
                "no S3 credentials found for {shown}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                 (with AWS_SESSION_TOKEN for temporary ones), or AWS_WEB_IDENTITY_TOKEN_FILE and \
                 AWS_ROLE_ARN; for an EC2 instance role, AWS_METADATA_ENDPOINT=http://169.254.169.254"
            );
        }
        let store = AmazonS3Builder::from_env()
            .with_url(url)
            .build()
            .with_context(|| format!("opening the {what} bucket {shown}"))?;
        Ok(Bucket {
            store: Arc::new(store),
            root: Path::from(parsed.path().trim_matches('/')),
            url: shown,
        })
    }

    fn folder(url: &str, folder: &str, what: &str) -> Result<Bucket> {
        let store = LocalFileSystem::new_with_prefix(folder)
            .with_context(|| format!("opening the {what} folder {folder}"))?;
        Ok(Bucket {
            store: Arc::new(store),
            root: Path::default(),
            url: mask_url(url),
        })
    }

    /// The URL, password masked.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The store the files go to.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The path of `parts` (folders, then a file name) under the URL's prefix.
    pub fn path(&self, parts: &[&str]) -> Path {
        parts
            .iter()
            .fold(self.root.clone(), |path, part| path.join(*part))
    }
}

/// Where a URL points.
enum Location<'a> {
    /// `s3://bucket/prefix`.
    Bucket,
    /// A local folder (the path, without `file://`).
    Folder(&'a str),
}

impl Location<'_> {
    fn of<'u>(url: &'u str, what: &str) -> Result<Location<'u>> {
        if url.starts_with("s3://") {
            return Ok(Location::Bucket);
        }
        match url.strip_prefix("file://") {
            Some(path) => Ok(Location::Folder(path)),
            None if url.contains("://") => bail!(
                "{what} {}: only folders and s3://bucket/prefix are supported",
                mask_url(url)
            ),
            None => Ok(Location::Folder(url)),
        }
    }
}

/// Whether the environment names a source of S3 credentials. Without one, object_store would
/// ask the EC2 instance metadata service (169.254.169.254), which outside EC2 fails with an
/// unrelated-looking HTTP error or a long wait; so a run without any says so at once, and an EC2
/// instance role is used when `AWS_METADATA_ENDPOINT` asks for it.
fn s3_credentials_configured() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_METADATA_ENDPOINT",
    ]
    .into_iter()
    .any(set)
        || std::env::var("AWS_SKIP_SIGNATURE").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}
