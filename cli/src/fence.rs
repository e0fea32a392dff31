//! Fenced KV writes from the command that `driftlock lock NAME -- CMD` runs.
//!
//! A fenced write must come from the session that holds the grant: the
//! session's secret lives in the `driftlock lock` process, and its sequence
//! numbers are that process's (a second process sending operations in the
//! same session would collide with them and get deduplicated replies). So
//! the lock process relays: it listens on a private Unix socket (a fresh
//! mode-0700 directory under `$XDG_RUNTIME_DIR` or the temporary directory,
//! removed on exit), passes the socket's path to CMD as
//! `DRIFTLOCK_LOCK_SOCKET`, and performs each request it receives through
//! its own session as a fenced write. `driftlock kv put|cas|del --fence
//! NAME:TOKEN` is the other end.
//!
//! The protocol is one connection per request: one JSON line
//! ([`FenceRequest`]) from the client, one JSON line ([`FenceReply`]) back,
//! then the connection closes. The relay checks only the request's form
//! (and its size, [`MAX_REQUEST_LINE_BYTES`]); whether the fence is the
//! newest grant, still held, and held by this session is the cluster's
//! decision (`Rejection::StaleFencingToken`, `FenceNotHeld`,
//! `FenceNotHolder`), passed back as [`FenceReply::FenceRefused`].

use std::future::Future;
use std::path::{Path, PathBuf};

use driftlock_client::{ClientError, Session};
use driftlock_proto::{Fence, Rejection};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The variable through which `driftlock lock` tells its command where its
/// relay socket is.
pub const LOCK_SOCKET_ENV: &str = "DRIFTLOCK_LOCK_SOCKET";

/// What `kv put|cas|del --fence` says outside `driftlock lock`.
pub const OUTSIDE_LOCK: &str =
    "--fence works inside `driftlock lock NAME -- CMD`: the write must come from the session holding the lock";

/// Longest request line the relay reads, newline included: a key and a
/// lock name at their ceiling and a value at its ceiling, each byte of
/// which JSON may spell as six (`\u001f`), plus room for the field names.
/// A longer line is refused without being parsed (the cluster would refuse
/// such a value anyway).
pub const MAX_REQUEST_LINE_BYTES: usize = 6 * driftlock_proto::limits::MAX_ITEM_BYTES;

/// Longest reply line the client reads: a revision, or an error message.
const MAX_REPLY_LINE_BYTES: usize = 64 << 10;

/// One fenced write, as `kv put|cas|del --fence` sends it to the relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum FenceRequest {
    /// `kv put KEY VALUE --fence NAME:TOKEN`.
    Put {
        /// The key to set.
        key: String,
        /// The text to store (its UTF-8 bytes).
        value: String,
        /// The grant the write claims to be made under.
        fence: Fence,
    },
    /// `kv cas KEY EXPECTED VALUE --fence NAME:TOKEN`.
    Cas {
        /// The key to set.
        key: String,
        /// The key's modification revision the write expects; 0 = the key
        /// must not exist.
        expected: u64,
        /// The text to store if the revision matches.
        value: String,
        /// The grant the write claims to be made under.
        fence: Fence,
    },
    /// `kv del KEY --fence NAME:TOKEN`.
    Del {
        /// The key to delete (a missing key is an error).
        key: String,
        /// The grant the write claims to be made under.
        fence: Fence,
    },
}

/// The relay's answer to one [`FenceRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FenceReply {
    /// The cluster applied the write; the key's new revision (for a
    /// delete, the revision of the delete).
    Written {
        /// The revision the write created.
        revision: u64,
    },
    /// The cluster refused the fence: the token is not the lock's newest
    /// grant, or the grant is not held now, or not by the relay's session.
    /// Nothing changed.
    FenceRefused {
        /// The cluster's reason, for people.
        message: String,
    },
    /// The write failed otherwise (a revision mismatch, a missing key, the
    /// session ended, the cluster unreachable, a malformed request).
    Failed {
        /// Why, for people.
        message: String,
    },
}

/// Parses `NAME:TOKEN` (the last `:` splits, so a lock name may contain
/// one); the token is a decimal fencing token as `driftlock lock` exports
/// it in `DRIFTLOCK_FENCING_TOKEN`.
pub fn parse_fence(s: &str) -> Result<Fence, String> {
    let (name, token) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("'{s}' is not NAME:TOKEN (e.g. jobs/nightly:$DRIFTLOCK_FENCING_TOKEN)"))?;
    if name.is_empty() {
        return Err(format!("'{s}' has no lock name before the ':'"));
    }
    let token = token
        .parse::<u64>()
        .map_err(|_| format!("'{token}' is not a fencing token (a decimal number, as in $DRIFTLOCK_FENCING_TOKEN)"))?;
    Ok(Fence {
        lock: name.to_owned(),
        token,
    })
}

/// The reply for a write's outcome: the cluster's fence rejections apart
/// from every other failure.
pub fn reply_for(result: Result<u64, ClientError>) -> FenceReply {
    match result {
        Ok(revision) => FenceReply::Written { revision },
        Err(ClientError::Rejected(
            r @ (Rejection::StaleFencingToken { .. }
            | Rejection::FenceNotHeld { .. }
            | Rejection::FenceNotHolder { .. }),
        )) => FenceReply::FenceRefused { message: r.to_string() },
        Err(e) => FenceReply::Failed { message: e.to_string() },
    }
}

/// Performs one request through `session`, the one holding the lock.
pub async fn perform(session: &Session, request: FenceRequest) -> FenceReply {
    let result = match request {
        FenceRequest::Put { key, value, fence } => session.kv_put_fenced(&key, value.into_bytes(), fence).await,
        FenceRequest::Cas {
            key,
            expected,
            value,
            fence,
        } => session.kv_cas_fenced(&key, expected, value.into_bytes(), fence).await,
        FenceRequest::Del { key, fence } => session.kv_delete_fenced(&key, fence).await,
    };
    reply_for(result)
}

/// Reads one line of at most `max` bytes (newline included); `Ok(None)`
/// when the line is longer. The newline is stripped.
async fn read_line_bounded<R: AsyncRead + Unpin>(reader: R, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    use tokio::io::AsyncReadExt;
    let limit = u64::try_from(max).unwrap_or(u64::MAX);
    let mut reader = BufReader::new(reader.take(limit));
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).await?;
    if line.last() == Some(&b'\n') {
        line.pop();
        Ok(Some(line))
    } else if line.len() >= max {
        Ok(None)
    } else {
        // End of stream without a newline: take what came.
        Ok(Some(line))
    }
}

/// Serves one connection: reads one request, answers it with `handle`'s
/// reply (or a `Failed` one when the request is too long or malformed),
/// and closes.
pub async fn serve_connection<S, H, F>(stream: S, handle: H) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: FnOnce(FenceRequest) -> F,
    F: Future<Output = FenceReply>,
{
    let (read, mut write) = tokio::io::split(stream);
    let reply = match read_line_bounded(read, MAX_REQUEST_LINE_BYTES).await? {
        None => FenceReply::Failed {
            message: format!("request longer than {MAX_REQUEST_LINE_BYTES} bytes"),
        },
        Some(line) => match serde_json::from_slice::<FenceRequest>(&line) {
            Ok(request) => handle(request).await,
            Err(e) => FenceReply::Failed {
                message: format!("malformed request: {e}"),
            },
        },
    };
    let mut out = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

/// The private socket a `driftlock lock` process relays fenced writes on.
/// Dropping it removes the socket and its directory.
pub struct Relay {
    listener: UnixListener,
    path: PathBuf,
    /// The mode-0700 directory holding the socket, removed on drop.
    _dir: tempfile::TempDir,
}

impl Relay {
    /// Creates the socket in a fresh mode-0700 directory under
    /// `$XDG_RUNTIME_DIR` (when set to a directory) or the temporary
    /// directory.
    pub fn bind() -> Result<Relay, String> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        Relay::bind_in(&base)
    }

    /// Creates the socket in a fresh mode-0700 directory under `base`.
    pub fn bind_in(base: &Path) -> Result<Relay, String> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("driftlock-lock-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(base)
            .map_err(|e| format!("cannot create a private directory in {}: {e}", base.display()))?;
        let path = dir.path().join("fence.sock");
        let listener = UnixListener::bind(&path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
        Ok(Relay {
            listener,
            path,
            _dir: dir,
        })
    }

    /// The socket's path, for `DRIFTLOCK_LOCK_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves requests through `session` until the future is dropped,
    /// each connection in a task of its own so that a slow write does not
    /// hold up the others; the tasks end with the future.
    pub async fn serve(&self, session: Session) {
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let session = session.clone();
                        tasks.spawn(async move {
                            let served = serve_connection(stream, |request| async move {
                                perform(&session, request).await
                            })
                            .await;
                            if let Err(e) = served {
                                tracing::debug!(error = %e, "fenced-write connection failed");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "fenced-write relay cannot accept");
                        // Do not spin on a persistent failure (out of descriptors).
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
    }
}

/// Sends `request` to the relay of the enclosing `driftlock lock` (its
/// socket from `DRIFTLOCK_LOCK_SOCKET`) and returns the reply; an error
/// when there is no enclosing lock or it cannot be reached.
pub async fn send(request: &FenceRequest) -> Result<FenceReply, String> {
    let path = std::env::var_os(LOCK_SOCKET_ENV)
        .filter(|p| !p.is_empty())
        .ok_or(OUTSIDE_LOCK)?;
    let path = PathBuf::from(path);
    send_to(&path, request).await
}

/// Sends `request` to the relay listening at `path`.
pub async fn send_to(path: &Path, request: &FenceRequest) -> Result<FenceReply, String> {
    let unreachable = |e: std::io::Error| {
        format!(
            "cannot reach the `driftlock lock` process at {} ({LOCK_SOCKET_ENV}): {e}",
            path.display()
        )
    };
    let stream = UnixStream::connect(path).await.map_err(unreachable)?;
    let mut line = serde_json::to_vec(request).map_err(|e| format!("cannot encode the request: {e}"))?;
    line.push(b'\n');
    let (read, mut write) = stream.into_split();
    write.write_all(&line).await.map_err(unreachable)?;
    let reply = read_line_bounded(read, MAX_REPLY_LINE_BYTES)
        .await
        .map_err(unreachable)?
        .ok_or("the `driftlock lock` process sent an overlong reply")?;
    if reply.is_empty() {
        return Err("the `driftlock lock` process closed the connection without answering".into());
    }
    serde_json::from_slice(&reply).map_err(|e| format!("unreadable reply from the `driftlock lock` process: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence(lock: &str, token: u64) -> Fence {
        Fence {
            lock: lock.into(),
            token,
        }
    }

    #[test]
    fn fence_arguments_parse_at_the_last_colon() {
        assert_eq!(parse_fence("job:42").unwrap(), fence("job", 42));
        assert_eq!(parse_fence("a:b/c:7").unwrap(), fence("a:b/c", 7));
        for bad in ["job", "job:", ":5", "job:-1", "job:x", "job:5 "] {
            assert!(parse_fence(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn the_wire_format_is_one_tagged_json_object() {
        let req = FenceRequest::Cas {
            key: "k".into(),
            expected: 3,
            value: "v".into(),
            fence: fence("job", 9),
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            text,
            r#"{"op":"cas","key":"k","expected":3,"value":"v","fence":{"lock":"job","token":9}}"#
        );
        assert_eq!(serde_json::from_str::<FenceRequest>(&text).unwrap(), req);
        let reply = serde_json::to_string(&FenceReply::Written { revision: 5 }).unwrap();
        assert_eq!(reply, r#"{"written":{"revision":5}}"#);
        // Unknown fields are refused rather than ignored.
        assert!(serde_json::from_str::<FenceRequest>(
            r#"{"op":"del","key":"k","fence":{"lock":"j","token":1},"extra":1}"#
        )
        .is_err());
    }

    #[test]
    fn fence_rejections_are_told_apart_from_other_failures() {
        let stale = ClientError::Rejected(Rejection::StaleFencingToken { token: 4, latest: 9 });
        assert_eq!(
            reply_for(Err(stale)),
            FenceReply::FenceRefused {
                message: "fencing token 4 is stale (newest grant is 9)".into()
            }
        );
        let not_held = ClientError::Rejected(Rejection::FenceNotHeld { token: 4 });
        assert!(matches!(reply_for(Err(not_held)), FenceReply::FenceRefused { .. }));
        let other = ClientError::Rejected(Rejection::FenceNotHolder { token: 4 });
        assert!(matches!(reply_for(Err(other)), FenceReply::FenceRefused { .. }));
        let mismatch = ClientError::Rejected(Rejection::RevisionMismatch { expected: 1, actual: 2 });
        assert!(matches!(reply_for(Err(mismatch)), FenceReply::Failed { .. }));
        assert!(matches!(
            reply_for(Err(ClientError::SessionExpired)),
            FenceReply::Failed { .. }
        ));
        assert_eq!(reply_for(Ok(7)), FenceReply::Written { revision: 7 });
    }

    /// Serves one connection whose client sent `input`, with a handler
    /// that answers `Written { revision: 1 }`; returns the reply line and
    /// whether the handler ran.
    async fn serve_bytes(input: Vec<u8>) -> (String, bool) {
        let (mut client, server) = tokio::io::duplex(64 << 10);
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ran2 = ran.clone();
        let server = tokio::spawn(async move {
            serve_connection(server, |_req| async move {
                ran2.store(true, std::sync::atomic::Ordering::SeqCst);
                FenceReply::Written { revision: 1 }
            })
            .await
        });
        let writer = tokio::spawn(async move {
            // The server may answer (and close) before reading it all.
            let _ = client.write_all(&input).await;
            let mut out = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut client, &mut out).await;
            out
        });
        let out = writer.await.unwrap();
        server.await.unwrap().unwrap();
        (
            String::from_utf8(out).unwrap(),
            ran.load(std::sync::atomic::Ordering::SeqCst),
        )
    }

    #[tokio::test]
    async fn a_request_is_answered_and_bad_input_is_refused_without_reaching_the_cluster() {
        let good = b"{\"op\":\"put\",\"key\":\"k\",\"value\":\"v\",\"fence\":{\"lock\":\"j\",\"token\":2}}\n".to_vec();
        let (reply, ran) = serve_bytes(good).await;
        assert_eq!(reply, "{\"written\":{\"revision\":1}}\n");
        assert!(ran);

        let (reply, ran) = serve_bytes(b"not json\n".to_vec()).await;
        assert!(
            reply.starts_with("{\"failed\":{\"message\":\"malformed request"),
            "{reply}"
        );
        assert!(!ran);

        let (reply, ran) = serve_bytes(b"{\"op\":\"put\",\"key\":\"k\"}\n".to_vec()).await;
        assert!(reply.contains("malformed request"), "{reply}");
        assert!(!ran);

        // A line over the bound is refused unread, however it goes on.
        let mut huge = b"{\"op\":\"put\",\"key\":\"k\",\"value\":\"".to_vec();
        huge.resize(MAX_REQUEST_LINE_BYTES + 10, b'a');
        let (reply, ran) = serve_bytes(huge).await;
        assert!(reply.contains("request longer than"), "{reply}");
        assert!(!ran);
    }

    #[tokio::test]
    async fn the_relay_lives_in_a_private_directory_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let relay = Relay::bind_in(base.path()).unwrap();
        let path = relay.path().to_path_buf();
        let dir = path.parent().unwrap().to_path_buf();
        assert!(dir.starts_with(base.path()));
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
        // A client reaches it: answer by hand, as `serve` would.
        let accept = async {
            let (stream, _) = relay.listener.accept().await.unwrap();
            serve_connection(stream, |req| async move {
                assert!(matches!(req, FenceRequest::Del { .. }));
                FenceReply::FenceRefused { message: "no".into() }
            })
            .await
            .unwrap();
        };
        let req = FenceRequest::Del {
            key: "k".into(),
            fence: fence("j", 1),
        };
        let ((), reply) = tokio::join!(accept, send_to(&path, &req));
        assert_eq!(reply.unwrap(), FenceReply::FenceRefused { message: "no".into() });
        drop(relay);
        assert!(!dir.exists(), "{} left behind", dir.display());
        let err = send_to(&path, &req).await.unwrap_err();
        assert!(err.contains("cannot reach the `driftlock lock` process"), "{err}");
    }
}
