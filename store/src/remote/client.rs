//! [`RemoteClient`]: a blocking face on the async AWS S3 client, with the
//! few operations cairn needs, retries with backoff (the SDK's standard
//! mode, which also backs off on `SlowDown` and 5xx answers), CRC32C
//! checksums on every upload, and errors that say what to do.
//!
//! The client owns a small tokio runtime; every method blocks on it, so
//! callers stay synchronous and may call from several threads at once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_smithy_http_client::tls;

use super::{Location, RemoteSpec};
use crate::container::{NextRange, RangeSink};
use crate::error::{Error, Result};

/// Objects of at least this size go up in parts of this size.
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;
/// Keys per `DeleteObjects` request (the S3 maximum).
const DELETE_BATCH: usize = 1000;
/// Longest JSON object cairn reads whole from a remote: the config, writer
/// claims and dataset records, which are a few KiB (a record grows with
/// its sources and the top directory's xattrs).
pub const MAX_JSON_OBJECT: u64 = 64 << 20;
/// Longest object uploaded in one request that cairn reads whole (index
/// deltas): S3 refuses a single PUT above 5 GiB, and a push writes its
/// delta with one.
pub const MAX_SINGLE_PUT_OBJECT: u64 = 5 << 30;
/// Most pages one listing may take: a billion keys at S3's 1,000 a page.
/// A server that hands out new continuation tokens for ever is stopped
/// here, and one that repeats a token at once (see [`Pager`]).
const MAX_LIST_PAGES: u64 = 1_000_000;
/// Most pages in a row that may come back empty yet truncated. S3 does
/// send a few over runs of delete markers in versioned buckets; endless
/// ones are a server going nowhere.
const MAX_EMPTY_PAGES: u32 = 1000;

/// A listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteObject {
    /// Its full key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A connection to one remote.
pub struct RemoteClient {
    runtime: tokio::runtime::Runtime,
    client: Client,
    spec: RemoteSpec,
    location: Location,
    part_size: u64,
    /// HTTP requests sent so far, retries included.
    requests: Arc<AtomicU64>,
}

/// Counts every HTTP request the SDK sends (each attempt of each
/// operation, so retries count): what a remote's latency is paid on.
#[derive(Debug)]
struct CountRequests(Arc<AtomicU64>);

impl aws_sdk_s3::config::Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        _config: &mut aws_sdk_s3::config::ConfigBag,
    ) -> std::result::Result<(), aws_sdk_s3::error::BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Ranged GETs in flight at once for `get_ranges` (what `cat` and `get`
/// read through): with 10-50 ms before a response's first byte, this many
/// keep a fast link busy. Staging for a restore takes its own count
/// (`restore --jobs`).
const RANGES_IN_FLIGHT: usize = 32;

impl RemoteClient {
    /// Builds a client for `spec`: credentials and (unless given) the region
    /// from the SDK's standard chain. Nothing is sent yet.
    pub fn new(spec: &RemoteSpec) -> Result<RemoteClient> {
        let location = spec.location()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::Remote { what: "starting the S3 client".into(), reason: e.to_string() })?;
        // rustls on ring: see the note on the SDK's features in Cargo.toml.
        // Every provider the loader makes (the region and credential
        // chains, IMDS, SSO, STS) uses this client too.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        if let Some(region) = &spec.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let shared = runtime.block_on(loader.load());
        let region = shared.region().cloned().unwrap_or(aws_config::Region::from_static("us-east-1"));
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .region(region)
            .force_path_style(spec.path_style)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(env_u64("CAIRN_S3_MAX_ATTEMPTS").unwrap_or(6) as u32)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(10)),
            )
            .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_secs(10)).build())
            // Downloads are checked against BLAKE3 (containers) and blob ids
            // (ranges); some servers send a whole object's checksum with a
            // range, which the SDK would then reject.
            .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &spec.endpoint_url {
            config = config.endpoint_url(endpoint);
        }
        let requests = Arc::new(AtomicU64::new(0));
        let client = Client::from_conf(config.interceptor(CountRequests(requests.clone())).build());
        let part_size = env_u64("CAIRN_S3_PART_SIZE").unwrap_or(DEFAULT_PART_SIZE).max(1);
        Ok(RemoteClient { runtime, client, spec: spec.clone(), location, part_size, requests })
    }

    /// HTTP requests this client has sent, retries included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Where the remote is.
    pub fn spec(&self) -> &RemoteSpec {
        &self.spec
    }

    /// The bucket, the prefix and the keys under it.
    pub fn location(&self) -> &Location {
        &self.location
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Checks that the bucket exists and the credentials are accepted.
    pub fn check_access(&self) -> Result<()> {
        let bucket = &self.location.bucket;
        self.block_on(self.client.head_bucket().bucket(bucket).send())
            .map_err(|e| self.error("opening the bucket", "", e))?;
        Ok(())
    }

    /// Every object under `prefix` (a full key prefix), in key order.
    /// Bounded: a listing that repeats a continuation token, or goes on
    /// past [`MAX_LIST_PAGES`] pages or [`MAX_EMPTY_PAGES`] empty ones in a
    /// row, fails naming the prefix.
    pub fn list(&self, prefix: &str) -> Result<Vec<RemoteObject>> {
        let mut out = Vec::new();
        let mut pager = Pager::new(format!("listing {prefix} on {}", self.spec));
        let mut token: Option<String> = None;
        loop {
            let request = self
                .client
                .list_objects_v2()
                .bucket(&self.location.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take());
            let page = self.block_on(request.send()).map_err(|e| self.error("listing", prefix, e))?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    out.push(RemoteObject { key: key.to_string(), size: object.size().unwrap_or(0).max(0) as u64 });
                }
            }
            let truncated = page.is_truncated() == Some(true);
            match pager.next(page.contents().len(), truncated, page.next_continuation_token())? {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// A whole object of at most `max_len` bytes (what the caller can
    /// expect of it), or `None` if there is none. A longer object is an
    /// error naming the key, found from its length header or, failing
    /// that, as soon as the body passes `max_len`.
    pub fn get(&self, key: &str, max_len: u64) -> Result<Option<Vec<u8>>> {
        let request = self.client.get_object().bucket(&self.location.bucket).key(key);
        match self.block_on(async { Self::collect(request.send().await, max_len).await }) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.code() == Some("NoSuchKey") => Ok(None),
            Err(e) => Err(self.error("downloading", key, e)),
        }
    }

    /// Several ranges, fetched concurrently (at most [`RANGES_IN_FLIGHT`]
    /// at a time); the results come back in the order asked.
    pub fn get_ranges(&self, ranges: &[(String, u64, u64)]) -> Vec<Result<Vec<u8>>> {
        let fetches = ranges.iter().map(|(key, start, len)| self.fetch_range(key, *start, *len)).collect();
        self.block_on(bounded(fetches, RANGES_IN_FLIGHT))
    }

    /// Several ranges, at most `jobs` in flight, started when and in the
    /// order `sink` asks, each passed to it as soon as it lands, in any
    /// order: a caller that writes each away holds only the requests in
    /// flight, and a slow response holds up no other.
    pub fn get_ranges_each(&self, ranges: &[(String, u64, u64)], jobs: usize, sink: &mut dyn RangeSink) {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        // While the sink says "not yet", responses in flight keep landing,
        // and it is asked again this often.
        const ASK_AGAIN: Duration = Duration::from_millis(2);
        // Requests in flight share the link, so 32 started at once all land
        // at about the same time, and whoever waits for the first waits
        // for nearly all of them. Callers ask in the order they need the
        // ranges: the first goes alone, and each landing lets two more
        // start, up to `jobs` (1, 3, 5, ... in flight): the first ranges
        // land first, and the link is full after a few round trips.
        let jobs = jobs.max(1);
        self.block_on(async {
            let mut in_flight = FuturesUnordered::new();
            let (mut limit, mut done) = (1, false);
            loop {
                let mut held_back = false;
                while !done && in_flight.len() < limit {
                    match sink.next() {
                        NextRange::Start(i) => match ranges.get(i) {
                            Some((key, start, len)) => {
                                in_flight.push(async move { (i, self.fetch_range(key, *start, *len).await) })
                            }
                            None => sink.landed(
                                i,
                                Err(Error::Remote {
                                    what: "fetching ranges".into(),
                                    reason: format!("range {i} asked for, of {}", ranges.len()),
                                }),
                            ),
                        },
                        NextRange::NotYet => {
                            held_back = true;
                            break;
                        }
                        NextRange::Done => done = true,
                    }
                }
                let landed = if !held_back {
                    match in_flight.next().await {
                        Some(landed) => Some(landed),
                        None => break,
                    }
                } else if in_flight.is_empty() {
                    tokio::time::sleep(ASK_AGAIN).await;
                    None
                } else {
                    // (`next` on the set is cancel-safe: a response that was
                    // not ready stays in it.)
                    tokio::time::timeout(ASK_AGAIN, in_flight.next()).await.ok().flatten()
                };
                if let Some((i, result)) = landed {
                    sink.landed(i, result);
                    limit = (limit + 2).min(jobs);
                }
            }
        });
    }

    async fn fetch_range(&self, key: &str, start: u64, len: u64) -> Result<Vec<u8>> {
        let last = start.checked_add(len.max(1) - 1).ok_or_else(|| Error::Remote {
            what: format!("downloading {key}"),
            reason: format!("a range of {len} bytes at {start} ends past 2^64; the index naming it is damaged"),
        })?;
        let range = format!("bytes={start}-{last}");
        let request = self.client.get_object().bucket(&self.location.bucket).key(key).range(range);
        // A server that sends more than the range is stopped at the range.
        let bytes = Self::collect(request.send().await, len).await.map_err(|e| self.error("downloading", key, e))?;
        if bytes.len() as u64 != len {
            return Err(Error::Remote {
                what: format!("downloading {key}"),
                reason: format!("asked for {len} bytes at {start}, got {}", bytes.len()),
            });
        }
        Ok(bytes)
    }

    async fn collect<E>(
        response: std::result::Result<aws_sdk_s3::operation::get_object::GetObjectOutput, SdkError<E>>,
        max_len: u64,
    ) -> std::result::Result<Vec<u8>, RemoteError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        collect_body(response.map_err(RemoteError::from_sdk)?, max_len).await
    }

    /// Uploads `bytes` under `key` in one request, with a CRC32C checksum
    /// that the server verifies.
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let request = self
            .client
            .put_object()
            .bucket(&self.location.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .body(ByteStream::from(bytes));
        self.block_on(request.send()).map_err(|e| self.error("uploading", key, e))?;
        Ok(())
    }

    /// Uploads `bytes` under `key` only if nothing is there yet
    /// (`If-None-Match: *`). Returns false if the key exists: another
    /// writer got there first. A server that ignores the condition
    /// overwrites and answers true; see `writer.rs` for how that is found.
    pub fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<bool> {
        let request = self
            .client
            .put_object()
            .bucket(&self.location.bucket)
            .key(key)
            .if_none_match("*")
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .body(ByteStream::from(bytes));
        match self.block_on(request.send()).map_err(RemoteError::from_sdk) {
            Ok(_) => Ok(true),
            // 412 when the key exists; 409 when another conditional write
            // to it is in flight (AWS).
            Err(e)
                if matches!(e.code(), Some("PreconditionFailed" | "ConditionalRequestConflict"))
                    || matches!(e.status, Some(412 | 409)) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.error("uploading", key, e)),
        }
    }

    /// Uploads a file: in one request below the part size, in parts above
    /// it (each with its CRC32C). A failed multipart upload is aborted, so
    /// no half-object is left behind and none is ever visible.
    pub fn put_file(&self, key: &str, path: &std::path::Path, progress: &(dyn Fn(u64) + Sync)) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(path).map_err(|e| Error::io("reading container", path, e))?;
        let len = file.metadata().map_err(|e| Error::io("reading container", path, e))?.len();
        if len < self.part_size {
            let bytes = std::fs::read(path).map_err(|e| Error::io("reading container", path, e))?;
            self.put(key, bytes)?;
            progress(len);
            return Ok(());
        }
        let bucket = &self.location.bucket;
        let created = self
            .block_on(
                self.client
                    .create_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                    .send(),
            )
            .map_err(|e| self.error("starting a multipart upload of", key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let upload = || -> Result<()> {
            let mut parts = Vec::new();
            let mut offset = 0u64;
            while offset < len {
                let size = self.part_size.min(len - offset);
                let mut bytes = vec![0u8; size as usize];
                file.read_exact_at(&mut bytes, offset).map_err(|e| Error::io("reading container", path, e))?;
                let number = parts.len() as i32 + 1;
                let part = self
                    .block_on(
                        self.client
                            .upload_part()
                            .bucket(bucket)
                            .key(key)
                            .upload_id(&upload_id)
                            .part_number(number)
                            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                            .body(ByteStream::from(bytes))
                            .send(),
                    )
                    .map_err(|e| self.error("uploading a part of", key, e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(part.e_tag().map(str::to_string))
                        .set_checksum_crc32_c(part.checksum_crc32_c().map(str::to_string))
                        .build(),
                );
                offset += size;
                progress(size);
            }
            let done = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
            self.block_on(
                self.client
                    .complete_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(done)
                    .send(),
            )
            .map_err(|e| self.error("finishing the multipart upload of", key, e))?;
            Ok(())
        };
        let result = upload();
        if result.is_err() {
            let abort = self.client.abort_multipart_upload().bucket(bucket).key(key).upload_id(&upload_id);
            if let Err(e) = self.block_on(abort.send()) {
                tracing::warn!(key, error = %RemoteError::from_sdk(e), "could not abort a failed multipart upload");
            }
        }
        result
    }

    /// Deletes keys, a thousand per request.
    pub fn delete(&self, keys: &[String]) -> Result<()> {
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|key| ObjectIdentifier::builder().key(key).build().expect("key is set"))
                .collect::<Vec<_>>();
            let delete = Delete::builder().set_objects(Some(objects)).quiet(true).build().expect("objects are set");
            let request = self.client.delete_objects().bucket(&self.location.bucket).delete(delete);
            let output = self.block_on(request.send()).map_err(|e| self.error("deleting", &batch[0], e))?;
            if let Some(failed) = output.errors().first() {
                return Err(Error::Remote {
                    what: format!("deleting {} from {}", failed.key().unwrap_or("?"), self.spec),
                    reason: format!(
                        "{} ({})",
                        failed.message().unwrap_or("no reason given"),
                        failed.code().unwrap_or("?")
                    ),
                });
            }
        }
        Ok(())
    }

    /// Turns an SDK error into one that names the remote and says what to do.
    fn error(&self, action: &str, key: &str, error: impl Into<RemoteError>) -> Error {
        let error = error.into();
        let what =
            if key.is_empty() { format!("{action} {}", self.spec) } else { format!("{action} {key} on {}", self.spec) };
        let bucket = &self.location.bucket;
        if error.code() == Some("NoSuchKey") {
            return Error::RemoteNotFound { what };
        }
        let refused = matches!(
            error.code(),
            Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "InvalidToken" | "ExpiredToken")
        ) || error.code().is_none() && error.status == Some(403);
        let no_bucket = error.code() == Some("NoSuchBucket")
            || key.is_empty() && error.status == Some(404) && error.code().is_none_or(|c| c == "NotFound");
        let reason = if no_bucket {
            format!("bucket '{bucket}' does not exist; create it, or check the name and --region")
        } else if refused {
            format!(
                "S3 refused the credentials ({}); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
                error.message
            )
        } else if error.no_credentials {
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, \
             or run where a role provides them"
                .to_string()
        } else if error.unreachable {
            format!(
                "cannot reach {} ({}); check --endpoint-url and the network, then run the command again",
                self.spec.endpoint_url.as_deref().unwrap_or("S3"),
                error.message
            )
        } else {
            error.message.clone()
        };
        Error::Remote { what, reason }
    }
}

/// What went wrong in one request, flattened out of the SDK's error types.
#[derive(Debug)]
pub(crate) struct RemoteError {
    code: Option<String>,
    status: Option<u16>,
    message: String,
    unreachable: bool,
    no_credentials: bool,
}

impl RemoteError {
    fn from_sdk<E>(error: SdkError<E>) -> RemoteError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = error.raw_response().map(|r| r.status().as_u16());
        let code = error.code().map(str::to_string);
        let full = format!("{}", aws_sdk_s3::error::DisplayErrorContext(&error));
        let unreachable = matches!(error, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_));
        // Identity resolution fails before anything is sent: no status.
        let no_credentials = status.is_none() && full.to_lowercase().contains("credential");
        let message = match (&code, error.message(), status) {
            (Some(code), Some(message), _) => format!("{code}: {message}"),
            (Some(code), None, _) => code.clone(),
            // HEAD answers have no body to say more.
            (None, _, Some(503)) => {
                "HTTP 503 SlowDown: the server kept asking to slow down, through every retry".into()
            }
            (None, _, Some(status)) if status >= 500 => format!("HTTP {status}: a server error, through every retry"),
            (None, _, Some(status)) => format!("HTTP {status}"),
            _ => full,
        };
        RemoteError { code, status, message, unreachable: unreachable && !no_credentials, no_credentials }
    }

    fn other(message: String) -> RemoteError {
        RemoteError { code: None, status: None, message, unreachable: false, no_credentials: false }
    }

    fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E> From<SdkError<E>> for RemoteError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    fn from(error: SdkError<E>) -> RemoteError {
        RemoteError::from_sdk(error)
    }
}

/// Reads a GET's body, at most `max_len` bytes of it: the server's length
/// header and what it sends are both remote input, so neither is trusted
/// to allocate by. Stops at the first piece past the limit.
async fn collect_body(
    mut output: aws_sdk_s3::operation::get_object::GetObjectOutput,
    max_len: u64,
) -> std::result::Result<Vec<u8>, RemoteError> {
    let too_long =
        |len: String| RemoteError::other(format!("the object is {len} bytes, more than the {max_len} expected"));
    let announced = output.content_length().map(|len| len.max(0) as u64);
    if let Some(len) = announced.filter(|&len| len > max_len) {
        return Err(too_long(len.to_string()));
    }
    // Sized by the header only up to 64 MiB; past that it grows as bytes come.
    let mut out = Vec::with_capacity(announced.unwrap_or(0).min(max_len).min(64 << 20) as usize);
    while let Some(piece) = output.body.try_next().await.map_err(|e| RemoteError::other(e.to_string()))? {
        if (out.len() + piece.len()) as u64 > max_len {
            return Err(too_long(format!("at least {}", out.len() + piece.len())));
        }
        out.extend_from_slice(&piece);
    }
    Ok(out)
}

/// The paging of one listing, apart from its requests so that its bounds
/// can be tested: takes each page's key count, truncation flag and next
/// token, and says which token to ask with next, or that the listing is
/// done, or that the server is going nowhere.
struct Pager {
    /// "listing PREFIX on REMOTE", for errors.
    what: String,
    /// BLAKE3 of every token seen (tokens are the server's, of any length).
    seen: std::collections::HashSet<[u8; 32]>,
    pages: u64,
    empty_in_a_row: u32,
}

impl Pager {
    fn new(what: String) -> Pager {
        Pager { what, seen: Default::default(), pages: 0, empty_in_a_row: 0 }
    }

    fn next(&mut self, n_keys: usize, truncated: bool, token: Option<&str>) -> Result<Option<String>> {
        let fail = |reason: String| Error::Remote {
            what: self.what.clone(),
            reason: format!("{reason}; the server is not answering as S3 does, so the listing was stopped"),
        };
        self.pages += 1;
        if !truncated {
            return Ok(None);
        }
        let Some(token) = token else {
            return Err(fail("a page says more follow but gives no continuation token".into()));
        };
        if !self.seen.insert(*blake3::hash(token.as_bytes()).as_bytes()) {
            return Err(fail(format!("continuation token {token:?} came back a second time")));
        }
        self.empty_in_a_row = if n_keys == 0 { self.empty_in_a_row + 1 } else { 0 };
        if self.empty_in_a_row > MAX_EMPTY_PAGES {
            return Err(fail(format!("{} empty pages in a row each say more follow", self.empty_in_a_row)));
        }
        if self.pages >= MAX_LIST_PAGES {
            return Err(fail(format!("{} pages and still more follow", self.pages)));
        }
        Ok(Some(token.to_string()))
    }
}

/// Runs futures with at most `limit` in flight; results in input order.
async fn bounded<T, F: Future<Output = T>>(futures: Vec<F>, limit: usize) -> Vec<T> {
    use futures_util::stream::{self, StreamExt};
    stream::iter(futures).buffered(limit).collect().await
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::operation::get_object::GetObjectOutput;
    use proptest::prelude::*;
    use proptest::test_runner::{RngSeed, TestRunner};

    use super::*;

    fn collect(body: Vec<u8>, announced: Option<i64>, max_len: u64) -> std::result::Result<Vec<u8>, String> {
        let output = GetObjectOutput::builder().body(ByteStream::from(body)).set_content_length(announced).build();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(collect_body(output, max_len)).map_err(|e| e.to_string())
    }

    /// Regression (issue 15): a GET took a body of any length into memory.
    /// Now the length header, and failing that the bytes themselves, stop
    /// at what the caller expects.
    #[test]
    fn a_body_longer_than_expected_is_refused() {
        assert_eq!(collect(vec![7; 100], Some(100), 100).unwrap(), vec![7; 100]);
        let error = collect(vec![7; 100], Some(100), 99).unwrap_err();
        assert!(error.contains("100 bytes, more than the 99 expected"), "{error}");
        // A header claiming a terabyte is refused before anything is read.
        let error = collect(vec![7; 10], Some(1 << 40), 1 << 20).unwrap_err();
        assert!(error.contains("1099511627776 bytes"), "{error}");
        // A header that lies low, or none, does not let more through.
        for announced in [Some(10), None] {
            let error = collect(vec![7; 100], announced, 50).unwrap_err();
            assert!(error.contains("at least 100 bytes"), "{error}");
        }
    }

    /// Regression (issue 15): a server answering "truncated" for ever kept
    /// `list` asking for ever. Each way of going nowhere now stops, naming
    /// the prefix.
    #[test]
    fn listings_that_go_nowhere_stop_naming_the_prefix() {
        let what = || "listing p/containers/ on s3://b/p".to_string();
        let mut pager = Pager::new(what());
        assert_eq!(pager.next(1000, true, Some("a")).unwrap().as_deref(), Some("a"));
        assert_eq!(pager.next(1000, true, Some("b")).unwrap().as_deref(), Some("b"));
        let error = pager.next(1000, true, Some("a")).unwrap_err().to_string();
        assert!(error.contains("p/containers/") && error.contains("came back a second time"), "{error}");

        let error = Pager::new(what()).next(5, true, None).unwrap_err().to_string();
        assert!(error.contains("no continuation token"), "{error}");

        let mut pager = Pager::new(what());
        let mut error = None;
        for page in 0..=MAX_EMPTY_PAGES {
            if let Err(e) = pager.next(0, true, Some(&page.to_string())) {
                error = Some(e.to_string());
                break;
            }
        }
        assert!(error.as_deref().is_some_and(|e| e.contains("empty pages in a row")), "{error:?}");

        // A few empty pages (S3 sends them over delete markers) are fine,
        // and a page that is not truncated ends the listing.
        let mut pager = Pager::new(what());
        for page in 0..10 {
            assert!(pager.next(0, true, Some(&page.to_string())).unwrap().is_some());
        }
        assert_eq!(pager.next(3, false, None).unwrap(), None);
    }

    /// Whatever a server answers, a listing ends: a pager fed pages with
    /// tokens from a small set stops (done or failed) within one page more
    /// than there are tokens.
    #[test]
    fn fuzz_listing_pages_always_end() {
        let config = ProptestConfig {
            cases: 512,
            rng_seed: RngSeed::Fixed(15),
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        let page = (0..3usize, prop::bool::weighted(0.95), prop::option::weighted(0.95, 0..20u8));
        TestRunner::new(config)
            .run(&prop::collection::vec(page, 1..64), |pages| {
                let mut pager = Pager::new("listing x".into());
                for (i, (n_keys, truncated, token)) in pages.iter().enumerate() {
                    let token = token.map(|t| t.to_string());
                    match pager.next(*n_keys, *truncated, token.as_deref()) {
                        Ok(Some(_)) => prop_assert!(i < 20, "page {} went on after 20 distinct tokens", i + 1),
                        Ok(None) | Err(_) => break,
                    }
                }
                Ok(())
            })
            .unwrap();
    }
}
