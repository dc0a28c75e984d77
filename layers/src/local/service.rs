use std::{
    fs::File,
    io::Write,
    path::PathBuf,
    sync::Arc,
    task::{Context, Poll},
    time::SystemTime,
};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tower::Service;

use crate::{
    body::{self, ArtifactBody},
    content_type,
    error::{json_error, BoxError},
    extensions::CacheStatus,
    path::ArtifactPath,
    remote_resolve::ResolvedRemote,
    respond::serve_entry,
    store::{new_blob_key, now_ms, Entry, EntryClass, Store},
    tee::spool,
};

/// The service behind a local repository.
#[derive(Debug, Clone)]
pub struct LocalRepo {
    store: Store,
    spool_dir: PathBuf,
    max_upload: u64,
}

impl LocalRepo {
    /// Artifacts in `store`; uploads spool through `spool_dir` and may be at
    /// most `max_upload` bytes.
    pub fn new(store: Store, spool_dir: impl Into<PathBuf>, max_upload: u64) -> Self {
        Self { store, spool_dir: spool_dir.into(), max_upload }
    }
}

impl<B> Service<Request<B>> for LocalRepo
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError> + Send,
{
    type Response = Response<ArtifactBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<ArtifactBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (Some(ResolvedRemote(remote)), Some(path)) =
                (req.extensions().get::<ResolvedRemote>(), req.extensions().get::<ArtifactPath>())
            else {
                return Ok(json_error(StatusCode::NOT_FOUND, "no local repository resolved", "", ""));
            };
            let (name, path) = (remote.name.clone(), path.clone());
            // Query strings mean nothing to a repository of files.
            let key = ArtifactPath::parse(path.raw(), None)?.cache_key(&name);
            let answer = match *req.method() {
                Method::GET | Method::HEAD => {
                    let (method, headers) = (req.method().clone(), req.headers().clone());
                    drop(req);
                    this.fetch(&key, &name, &path, &method, &headers).await
                }
                Method::PUT => this.upload(key, &name, &path, req).await,
                Method::DELETE => this.delete(&key, &name, &path).await,
                _ => {
                    let mut answer = json_error(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "method not allowed",
                        &name,
                        path.decoded(),
                    );
                    answer
                        .headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, PUT, DELETE"));
                    answer
                }
            };
            Ok(answer)
        })
    }
}

fn not_found(remote: &str, path: &ArtifactPath) -> Response<ArtifactBody> {
    json_error(StatusCode::NOT_FOUND, "not found in the local repository", remote, path.decoded())
}

fn failed(remote: &str, path: &ArtifactPath, e: impl std::fmt::Display) -> Response<ArtifactBody> {
    tracing::error!(remote, path = %path.decoded(), error = %e, "local repository store failed");
    json_error(StatusCode::SERVICE_UNAVAILABLE, "store unavailable", remote, path.decoded())
}

impl LocalRepo {
    async fn fetch(
        &self,
        key: &str,
        remote: &str,
        path: &ArtifactPath,
        method: &Method,
        headers: &http::HeaderMap,
    ) -> Response<ArtifactBody> {
        match self.store.index.get(key).await {
            Ok(Some(entry)) if entry.class == EntryClass::Local => {
                match serve_entry(&self.store, &entry, method, headers, CacheStatus::Local).await {
                    Ok(answer) => answer,
                    Err(crate::store::StoreError::NotFound) => not_found(remote, path),
                    Err(e) => failed(remote, path, e),
                }
            }
            Ok(_) => not_found(remote, path),
            Err(e) => failed(remote, path, e),
        }
    }

    async fn delete(&self, key: &str, remote: &str, path: &ArtifactPath) -> Response<ArtifactBody> {
        match self.store.index.remove(key).await {
            Ok(Some(entry)) => {
                if let Err(e) = self.store.blobs.delete(&entry.blob).await {
                    tracing::warn!(blob = %entry.blob, error = %e, "could not delete a removed artifact's blob");
                }
                let mut answer = Response::new(body::empty());
                *answer.status_mut() = StatusCode::NO_CONTENT;
                answer
            }
            Ok(None) => not_found(remote, path),
            Err(e) => failed(remote, path, e),
        }
    }

    async fn upload<B>(
        &self,
        key: String,
        remote: &str,
        path: &ArtifactPath,
        req: Request<B>,
    ) -> Response<ArtifactBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError> + Send,
    {
        let too_large = || {
            json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("uploads are limited to {} bytes (MAX_UPLOAD_BYTES)", self.max_upload),
                remote,
                path.decoded(),
            )
        };
        if path.decoded().ends_with('/') {
            return json_error(
                StatusCode::BAD_REQUEST,
                "an artifact path names a file, not a directory",
                remote,
                path.decoded(),
            );
        }
        let announced =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if announced.is_some_and(|n| n > self.max_upload) {
            return too_large();
        }
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.trim().eq_ignore_ascii_case("application/octet-stream"))
            .map(str::to_owned)
            .unwrap_or_else(|| content_type::guess(path.file_name()).to_owned());
        let (spool_path, file) = match spool::create(&self.spool_dir) {
            Ok(created) => created,
            Err(e) => return failed(remote, path, e),
        };
        let file = Arc::new(file);
        let received = receive(req.into_body(), &file, self.max_upload).await;
        let (size, sha256) = match received {
            Ok(done) => done,
            Err(refusal) => {
                let _ = tokio::fs::remove_file(&spool_path).await;
                return match refusal {
                    Refusal::TooLarge => too_large(),
                    Refusal::BrokeOff(e) => json_error(
                        StatusCode::BAD_REQUEST,
                        &format!("the upload broke off: {e}"),
                        remote,
                        path.decoded(),
                    ),
                    Refusal::Store(e) => failed(remote, path, e),
                };
            }
        };
        let blob = new_blob_key(remote, &key, path.file_name());
        if let Err(e) = self.store.blobs.put_file(&blob, &spool_path, size).await {
            let _ = tokio::fs::remove_file(&spool_path).await;
            return failed(remote, path, e);
        }
        let now = now_ms();
        let entry = Entry {
            key,
            remote: remote.to_owned(),
            path: path.decoded().to_owned(),
            blob: blob.clone(),
            size,
            class: EntryClass::Local,
            headers: vec![
                ("content-type".into(), content_type),
                ("etag".into(), format!("\"sha256:{sha256}\"")),
                ("last-modified".into(), httpdate::fmt_http_date(SystemTime::now())),
            ],
            cached_at_ms: now,
            expires_at_ms: None,
            policy: None,
        };
        let replaced = match self.store.index.put(entry).await {
            Ok(old) => {
                // Local artifacts count towards CACHE_MAX_BYTES.
                self.store.growth.add(remote, size);
                old
            }
            Err(e) => {
                let _ = self.store.blobs.delete(&blob).await;
                return failed(remote, path, e);
            }
        };
        if let Some(old) = &replaced {
            if let Err(e) = self.store.blobs.delete(&old.blob).await {
                tracing::warn!(blob = %old.blob, error = %e, "could not delete a replaced artifact's blob");
            }
        }
        let body =
            serde_json::json!({ "remote": remote, "path": path.decoded(), "size": size, "sha256": sha256 });
        let mut answer = Response::new(body::full(body.to_string()));
        *answer.status_mut() = if replaced.is_some() { StatusCode::OK } else { StatusCode::CREATED };
        answer.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        answer
    }
}

enum Refusal {
    TooLarge,
    BrokeOff(BoxError),
    Store(std::io::Error),
}

/// Streams an upload into the spool file, hashing it, within the cap.
async fn receive<B>(mut body: B, file: &Arc<File>, max: u64) -> Result<(u64, String), Refusal>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError> + Send,
{
    let mut size = 0u64;
    let mut hasher = Sha256::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Refusal::BrokeOff(e.into()))?;
        let Ok(data) = frame.into_data() else { continue };
        size += data.len() as u64;
        if size > max {
            return Err(Refusal::TooLarge);
        }
        hasher.update(&data);
        let file = file.clone();
        tokio::task::spawn_blocking(move || (&*file).write_all(&data))
            .await
            .map_err(|e| Refusal::Store(std::io::Error::other(e)))?
            .map_err(Refusal::Store)?;
    }
    Ok((size, hex::encode(hasher.finalize())))
}
