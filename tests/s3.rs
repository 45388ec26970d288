//! A real S3 protocol server for the tests: `s3s` over `s3s-fs` (objects
//! as files under a directory), with SigV4 authentication on, served by
//! hyper on 127.0.0.1 from its own tokio runtime so a test can stop it
//! mid-transfer and start it again on the same port.
//!
//! An access hook sees every authenticated request: it counts uploads and
//! downloaded bytes, and can answer the next N requests with an error
//! (`SlowDown`, `InternalError`) to exercise the client's retries. A
//! hostile mode ([`Hostile`]) lists for ever or sends longer bodies than
//! asked for, as a malicious remote would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::path::S3Path;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response};
use s3s::{S3Result, s3_error};

/// The credentials the server accepts.
pub const ACCESS_KEY: &str = "cairn-test-key";
/// Their secret.
pub const SECRET_KEY: &str = "cairn-test-secret-0123456789";
/// The bucket [`S3Server::start`] creates.
pub const BUCKET: &str = "backups";

/// Gives a client command the server's credentials and a region, and
/// keeps it from the machine's own AWS config, profile and instance
/// metadata.
pub fn credentials(command: &mut std::process::Command) -> &mut std::process::Command {
    command
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
}

/// Which error injected failures answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// 503 SlowDown.
    SlowDown,
    /// 500 InternalError.
    Internal,
}

/// How a hostile server misbehaves (see [`Seen::hostile`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hostile {
    /// Every listing page is empty, says more follow, and gives the same
    /// continuation token.
    EndlessListing,
    /// Every GET answers with the object (or range) and `n` more bytes.
    LongBodies(usize),
}

/// What the server saw.
#[derive(Default)]
pub struct Seen {
    /// How the server misbehaves from now on, if it does.
    pub hostile: Mutex<Option<Hostile>>,
    /// Authenticated requests.
    pub requests: AtomicU64,
    /// Keys of PutObject and UploadPart requests, in order.
    pub uploads: Mutex<Vec<String>>,
    /// Every authenticated operation, with its key (empty for bucket
    /// operations), in order.
    pub ops: Mutex<Vec<(String, String)>>,
    /// Bytes asked for by GetObject requests (the range, or the whole object).
    pub downloaded: AtomicU64,
    /// GetObject requests.
    pub gets: AtomicU64,
    /// Requests still to fail, and how.
    failures: AtomicUsize,
    failure: Mutex<Option<Failure>>,
    /// Injected failures answered.
    pub failed: AtomicU64,
    /// Milliseconds every authenticated request waits before it is
    /// handled: a real S3's time to first byte (the benches set it).
    pub latency_ms: AtomicU64,
    /// Ranged GETs of keys containing this fail with InternalError, every
    /// time: a container that cannot be read in parts.
    pub fail_ranges_of: Mutex<Option<String>>,
    /// Requests that create objects (PutObject, CompleteMultipartUpload)
    /// still being handled: a client killed mid-request may leave one
    /// finishing after it died.
    pub writing: AtomicUsize,
}

/// Counts a request in `Seen::writing` while it lives.
struct Writing<'a>(&'a AtomicUsize);

impl<'a> Writing<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Writing(count)
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Seen {
    /// Answers the next `n` requests with `failure`.
    pub fn fail_next(&self, n: usize, failure: Failure) {
        *self.failure.lock().unwrap() = Some(failure);
        self.failures.store(n, Ordering::SeqCst);
    }

    /// Uploads of keys containing `part`.
    pub fn uploads_of(&self, part: &str) -> usize {
        self.uploads.lock().unwrap().iter().filter(|k| k.contains(part)).count()
    }

    /// Forgets the counts.
    pub fn reset(&self) {
        self.requests.store(0, Ordering::SeqCst);
        self.uploads.lock().unwrap().clear();
        self.ops.lock().unwrap().clear();
        self.downloaded.store(0, Ordering::SeqCst);
        self.gets.store(0, Ordering::SeqCst);
        self.failed.store(0, Ordering::SeqCst);
    }
}

struct Hook {
    seen: Arc<Seen>,
    root: PathBuf,
}

#[async_trait::async_trait]
impl S3Access for Hook {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        if cx.credentials().is_none() {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        }
        self.seen.requests.fetch_add(1, Ordering::SeqCst);
        let latency = self.seen.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
        }
        if self.seen.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            self.seen.failed.fetch_add(1, Ordering::SeqCst);
            return Err(match *self.seen.failure.lock().unwrap() {
                Some(Failure::Internal) => s3_error!(InternalError, "injected"),
                _ => s3_error!(SlowDown, "injected"),
            });
        }
        let key = match cx.s3_path() {
            S3Path::Object { key, .. } => key.to_string(),
            _ => String::new(),
        };
        self.seen.ops.lock().unwrap().push((cx.s3_op().name().to_string(), key));
        let S3Path::Object { bucket, key } = cx.s3_path() else { return Ok(()) };
        match cx.s3_op().name() {
            "PutObject" | "UploadPart" => self.seen.uploads.lock().unwrap().push(key.to_string()),
            "GetObject" => {
                self.seen.gets.fetch_add(1, Ordering::SeqCst);
                let range = cx.headers().get("range").and_then(|v| v.to_str().ok()).and_then(parse_range);
                let failing = self.seen.fail_ranges_of.lock().unwrap().clone();
                if range.is_some() && failing.is_some_and(|part| key.contains(&part)) {
                    self.seen.failed.fetch_add(1, Ordering::SeqCst);
                    return Err(s3_error!(InternalError, "injected for this key"));
                }
                let bytes = match range {
                    Some((start, end)) => end - start + 1,
                    None => std::fs::metadata(self.root.join(&**bucket).join(&**key)).map_or(0, |m| m.len()),
                };
                self.seen.downloaded.fetch_add(bytes, Ordering::SeqCst);
            }
            _ => {}
        }
        Ok(())
    }
}

/// `s3s_fs::FileSystem` with a GetObject that reads just the range asked
/// for: s3s-fs reads and MD5s the whole object on every GET (for its
/// ETag), which costs a test restoring by ranged GETs minutes.
struct Files {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
    /// Whether `If-None-Match: *` is honoured (AWS, MinIO, R2) or ignored
    /// (some S3-compatible servers); s3s-fs itself ignores it.
    conditional: bool,
    /// Keys of conditional puts in flight, so that of two racing ones
    /// exactly one wins.
    claiming: Mutex<std::collections::HashSet<String>>,
    /// What the hook saw, and whether to misbehave.
    seen: Arc<Seen>,
}

/// `impl S3 for Files`: the listed operations forwarded to `self.fs`,
/// then the methods written out.
macro_rules! files_s3 {
    ({ $($op:ident($input:ty) -> $output:ty;)* } $($methods:tt)*) => {
        #[async_trait::async_trait]
        impl S3 for Files {
            $(
                async fn $op(&self, req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                    self.fs.$op(req).await
                }
            )*
            $($methods)*
        }
    };
}

files_s3! {
    {
        head_bucket(HeadBucketInput) -> HeadBucketOutput;
        get_bucket_location(GetBucketLocationInput) -> GetBucketLocationOutput;
        list_objects(ListObjectsInput) -> ListObjectsOutput;
        head_object(HeadObjectInput) -> HeadObjectOutput;
        delete_object(DeleteObjectInput) -> DeleteObjectOutput;
        delete_objects(DeleteObjectsInput) -> DeleteObjectsOutput;
        create_multipart_upload(CreateMultipartUploadInput) -> CreateMultipartUploadOutput;
        upload_part(UploadPartInput) -> UploadPartOutput;
        abort_multipart_upload(AbortMultipartUploadInput) -> AbortMultipartUploadOutput;
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let _writing = Writing::new(&self.seen.writing);
        self.fs.complete_multipart_upload(req).await
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let _writing = Writing::new(&self.seen.writing);
        if !(self.conditional && req.input.if_none_match.as_deref() == Some("*")) {
            return self.fs.put_object(req).await;
        }
        let key = format!("{}/{}", req.input.bucket, req.input.key);
        {
            let mut claiming = self.claiming.lock().unwrap();
            if self.root.join(&key).exists() || !claiming.insert(key.clone()) {
                return Err(s3_error!(PreconditionFailed, "the key exists (If-None-Match: *)"));
            }
        }
        let result = self.fs.put_object(req).await;
        self.claiming.lock().unwrap().remove(&key);
        result
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        if *self.seen.hostile.lock().unwrap() == Some(Hostile::EndlessListing) {
            let output = ListObjectsV2Output {
                contents: Some(Vec::new()),
                is_truncated: Some(true),
                next_continuation_token: Some("again".into()),
                key_count: Some(0),
                name: Some(req.input.bucket),
                prefix: req.input.prefix,
                ..Default::default()
            };
            return Ok(S3Response::new(output));
        }
        self.fs.list_objects_v2(req).await
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        use std::os::unix::fs::FileExt;
        let input = req.input;
        if !self.root.join(&input.bucket).is_dir() {
            return Err(s3_error!(NoSuchBucket));
        }
        let path = self.root.join(&input.bucket).join(&input.key);
        let file = std::fs::File::open(&path).map_err(|_| s3_error!(NoSuchKey))?;
        let metadata = file.metadata().map_err(|_| s3_error!(InternalError))?;
        let len = metadata.len();
        let (start, end) = match &input.range {
            None => (0, len),
            Some(range) => {
                let range = range.check(len).map_err(|_| s3_error!(InvalidRange))?;
                (range.start, range.end)
            }
        };
        let mut bytes = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut bytes, start).map_err(|_| s3_error!(InternalError))?;
        if let Some(Hostile::LongBodies(more)) = *self.seen.hostile.lock().unwrap() {
            bytes.resize(bytes.len() + more, b' ');
        }
        let output = GetObjectOutput {
            content_length: Some(bytes.len() as i64),
            content_range: input.range.map(|_| format!("bytes {start}-{}/{len}", end.max(start + 1) - 1)),
            e_tag: Some(format!("\"{len:x}\"")),
            last_modified: metadata.modified().ok().map(Timestamp::from),
            body: Some(StreamingBlob::from(s3s::Body::from(bytes))),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }
}

/// `bytes=A-B` → (A, B).
fn parse_range(header: &str) -> Option<(u64, u64)> {
    let (start, end) = header.strip_prefix("bytes=")?.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?))
}

/// A running (or stopped) server.
pub struct S3Server {
    root: PathBuf,
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    /// Whether `If-None-Match: *` is honoured.
    conditional: bool,
    /// What it saw.
    pub seen: Arc<Seen>,
}

impl S3Server {
    /// Serves `root` (made if missing, with the bucket [`BUCKET`]) on a
    /// free port, honouring conditional writes as AWS S3 does.
    pub fn start(root: &Path) -> S3Server {
        S3Server::start_with(root, true)
    }

    /// [`S3Server::start`], with conditional writes honoured or ignored.
    pub fn start_with(root: &Path, conditional: bool) -> S3Server {
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let mut server = S3Server {
            root: root.to_path_buf(),
            addr: "127.0.0.1:0".parse().unwrap(),
            runtime: None,
            conditional,
            seen: Arc::default(),
        };
        server.restart();
        server
    }

    /// The endpoint URL for `--endpoint-url`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where the objects are, as files.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stops serving at once: open connections are dropped mid-request.
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Starts serving again, on the same port once it has one.
    pub fn restart(&mut self) {
        self.stop();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let service = {
            let files = Files {
                fs: s3s_fs::FileSystem::new(&self.root).unwrap(),
                root: self.root.clone(),
                conditional: self.conditional,
                claiming: Mutex::default(),
                seen: self.seen.clone(),
            };
            let mut builder = S3ServiceBuilder::new(files);
            builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            builder.set_access(Hook { seen: self.seen.clone(), root: self.root.clone() });
            builder.build().into_shared()
        };
        let addr = self.addr;
        let listener = runtime.block_on(async {
            // The old port may take a moment to be free again.
            for _ in 0..50 {
                if let Ok(listener) = tokio::net::TcpListener::bind(addr).await {
                    return listener;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("cannot bind {addr}")
        });
        self.addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                // As real servers do: without it, small responses wait for
                // delayed ACKs (about 40 ms each).
                let _ = socket.set_nodelay(true);
                let service = service.clone();
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(socket);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        self.runtime = Some(runtime);
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
