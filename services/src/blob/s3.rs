//! Blobs in an S3-compatible object store (MinIO, Garage, Ceph, AWS).
//!
//! Path-style addressing, request checksums only when an operation requires
//! them (S3-compatible servers reject some of the newer defaults), and the
//! bucket is created when missing. A complete spool file is uploaded in one
//! `PutObject` when small, otherwise as a multipart upload of 16 MiB parts
//! read from the file (memory stays at a part in flight); an upload that fails
//! is aborted, so no partial object ever becomes visible. Reads stream, and
//! `Range` reads are ranged `GetObject`s.

use std::{io, ops::Range, path::Path, time::Duration};

use artifactapi_layers::store::{BlobList, BlobStore, BlobStream, StoreError};
use async_trait::async_trait;
use aws_sdk_s3::{
    config::{
        timeout::TimeoutConfig, BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
        ResponseChecksumValidation,
    },
    error::DisplayErrorContext,
    primitives::{ByteStream, Length},
    types::{CompletedMultipartUpload, CompletedPart},
    Client,
};
use futures_util::StreamExt;
use tokio_util::io::ReaderStream;

/// Parts of a multipart upload (S3 wants at least 5 MiB but the last).
const PART_SIZE: u64 = 16 * 1024 * 1024;

/// Where the object store is and how to reach it.
#[derive(Clone)]
pub struct S3Config {
    /// `http(s)://host:port`.
    pub endpoint: String,
    /// Access key.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
    /// The bucket blobs go in.
    pub bucket: String,
    /// The region the server expects in signatures.
    pub region: String,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field("secret_key", &"***")
            .finish()
    }
}

/// A blob store in one bucket.
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    client: Client,
    bucket: String,
}

fn backend(what: &str, e: impl std::error::Error) -> StoreError {
    StoreError::Backend(format!("{what}: {}", DisplayErrorContext(e)))
}

impl S3BlobStore {
    /// Connects, checks the server answers, and creates the bucket when missing.
    pub async fn connect(config: &S3Config) -> Result<Self, StoreError> {
        let credentials = Credentials::new(&config.access_key, &config.secret_key, None, None, "artifactapi");
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .build();
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&config.endpoint)
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(timeouts)
            .build();
        let store = Self { client: Client::from_conf(conf), bucket: config.bucket.clone() };
        store.ensure_bucket().await?;
        Ok(store)
    }

    async fn ensure_bucket(&self) -> Result<(), StoreError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {}
            Err(e) => return Err(backend("cannot reach the bucket", e)),
        }
        match self.client.create_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()) =>
            {
                Ok(())
            }
            Err(e) => Err(backend("cannot create the bucket", e)),
        }
    }

    async fn multipart(&self, key: &str, file: &Path, size: u64) -> Result<(), StoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| backend("cannot start an upload", e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let uploaded = self.upload_parts(key, &upload_id, file, size).await;
        let completed = match uploaded {
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| backend("cannot complete an upload", e)),
            Err(e) => Err(e),
        };
        if completed.is_err() {
            // Never leave a half-uploaded object (or its parts) behind.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        completed
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        file: &Path,
        size: u64,
    ) -> Result<Vec<CompletedPart>, StoreError> {
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < size {
            let len = (size - offset).min(PART_SIZE);
            let body = ByteStream::read_from()
                .path(file)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| StoreError::Io(io::Error::other(e)))?;
            let part = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(len as i64)
                .body(body)
                .send()
                .await
                .map_err(|e| backend("cannot upload a part", e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_owned))
                    .build(),
            );
            offset += len;
            number += 1;
        }
        Ok(parts)
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn put_file(&self, key: &str, file: &Path, size: u64) -> Result<(), StoreError> {
        let len = tokio::fs::metadata(file).await?.len();
        if len != size {
            return Err(StoreError::Backend(format!("file has {len} bytes, expected {size}")));
        }
        let stored = if size <= PART_SIZE {
            let body = ByteStream::from_path(file).await.map_err(|e| StoreError::Io(io::Error::other(e)))?;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_length(size as i64)
                .body(body)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| backend("cannot store an object", e))
        } else {
            self.multipart(key, file, size).await
        };
        // The spool file is consumed either way: on failure the fill cleans
        // up, on success the bytes live in the bucket now.
        if stored.is_ok() {
            let _ = tokio::fs::remove_file(file).await;
        }
        stored
    }

    async fn open(&self, key: &str, range: Option<Range<u64>>) -> Result<BlobStream, StoreError> {
        self.open_sized(key, range).await.map(|(stream, _)| stream)
    }

    async fn open_sized(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(BlobStream, Option<u64>), StoreError> {
        let mut request = self.client.get_object().bucket(&self.bucket).key(key);
        let ranged = range.is_some();
        if let Some(r) = range {
            if r.is_empty() {
                return Ok((futures_util::stream::empty().boxed(), None));
            }
            request = request.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        match request.send().await {
            Ok(object) => {
                // `Content-Range: bytes 0-99/100` tells the whole of a range.
                let whole = if ranged {
                    object.content_range().and_then(|r| r.rsplit_once('/')).and_then(|(_, n)| n.parse().ok())
                } else {
                    object.content_length().and_then(|n| u64::try_from(n).ok())
                };
                let stream = ReaderStream::with_capacity(object.body.into_async_read(), 256 * 1024).boxed();
                Ok((stream, whole))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Err(StoreError::NotFound),
            Err(e) => Err(backend("cannot read an object", e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| backend("cannot delete an object", e))
    }

    async fn list(&self) -> Result<BlobList, StoreError> {
        // S3 lists keys in bytewise (UTF-8 binary) order, a page at a time;
        // the next page is asked for only when this one has been read.
        let pages = self.client.list_objects_v2().bucket(&self.bucket).into_paginator().send();
        let listing = futures_util::stream::unfold(
            (pages, std::collections::VecDeque::new()),
            |(mut pages, mut ready)| async move {
                loop {
                    if let Some(item) = ready.pop_front() {
                        return Some((Ok(item), (pages, ready)));
                    }
                    let page = match pages.next().await? {
                        Ok(page) => page,
                        Err(e) => return Some((Err(backend("cannot list the bucket", e)), (pages, ready))),
                    };
                    for object in page.contents() {
                        let (Some(key), Some(modified)) = (object.key(), object.last_modified()) else {
                            continue;
                        };
                        let modified =
                            std::time::SystemTime::try_from(*modified).unwrap_or(std::time::UNIX_EPOCH);
                        ready.push_back((key.to_owned(), modified));
                    }
                }
            },
        );
        Ok(listing.boxed())
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(backend("cannot ask for an object", e)),
        }
    }

    async fn clean_up(&self, age: Duration) -> Result<u64, StoreError> {
        let cutoff = std::time::SystemTime::now().checked_sub(age).unwrap_or(std::time::UNIX_EPOCH);
        let mut aborted = 0;
        let mut marker: (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .set_key_marker(marker.0.clone())
                .set_upload_id_marker(marker.1.clone())
                .send()
                .await
                .map_err(|e| backend("cannot list unfinished uploads", e))?;
            for upload in page.uploads() {
                let started = upload
                    .initiated()
                    .and_then(|t| std::time::SystemTime::try_from(*t).ok())
                    .unwrap_or(std::time::UNIX_EPOCH);
                // Younger ones may be another replica's upload in progress.
                if started >= cutoff {
                    continue;
                }
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else { continue };
                let done = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await;
                match done {
                    Ok(_) => aborted += 1,
                    Err(e) => {
                        tracing::warn!(key, error = %DisplayErrorContext(&e), "cannot abort an unfinished upload")
                    }
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            marker =
                (page.next_key_marker().map(str::to_owned), page.next_upload_id_marker().map(str::to_owned));
            if marker.0.is_none() {
                break;
            }
        }
        Ok(aborted)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| backend("the bucket does not answer", e))
    }
}
