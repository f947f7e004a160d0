//! `flumen run --control <socket>` and `flumen job upgrade`: a running
//! single-process job takes live upgrades over a Unix socket.
//!
//! The protocol is one request per connection: the client writes one line of
//! JSON ([`ControlRequest`]) and reads one line back ([`ControlReply`]) when
//! the upgrade was applied, rolled back or refused. The socket is created
//! with mode 0600 (only the job's user may upgrade it) and removed when the
//! run ends.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use flumen_engine::{JobControl, UpgradeRequest};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The longest request line a control socket reads: a path, a reference
/// and a config fit many times over; a client cannot make the job buffer more.
const REQUEST_BYTES_MAX: u64 = 1 << 20;

/// One request on a job's control socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum ControlRequest {
    Upgrade {
        operator: String,
        /// The new version's component (resolved and verified by the client).
        component: PathBuf,
        /// What checkpoints record.
        reference: String,
        /// The new config (JSON); `None` keeps the spec's.
        config: Option<serde_json::Value>,
        health_batches: u32,
        /// The new version's package manifest, when it is a package.
        package: Option<flumen_engine::PackageManifest>,
    },
}

/// The answer to a [`ControlRequest`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlReply {
    Upgraded(flumen_engine::UpgradeOutcome),
    Error(String),
}

/// Serves `path` for the run's lifetime (the returned guard removes it).
pub fn serve(path: &Path, control: JobControl) -> anyhow::Result<SocketGuard> {
    if path.exists() {
        // A socket left by a run that was killed; anything else is not ours to remove.
        let meta = std::fs::symlink_metadata(path)?;
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            bail!("--control {}: exists and is not a socket", path.display());
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("--control {}: another running job is listening there", path.display());
        }
        std::fs::remove_file(path)?;
    }
    let listener =
        tokio::net::UnixListener::bind(path).with_context(|| format!("--control {}: cannot listen", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let control = control.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, control).await {
                    tracing::warn!("control socket: {e:#}");
                }
            });
        }
    });
    Ok(SocketGuard { path: path.to_path_buf(), task })
}

/// Removes the socket and stops serving it when dropped.
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn answer(stream: tokio::net::UnixStream, control: JobControl) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(REQUEST_BYTES_MAX)).read_line(&mut line).await?;
    let reply = match serde_json::from_str::<ControlRequest>(&line) {
        Err(e) => ControlReply::Error(format!("a malformed request: {e}")),
        Ok(ControlRequest::Upgrade { operator, component, reference, config, health_batches, package }) => {
            let mut request = UpgradeRequest::new(operator, component, reference);
            request.config_json = config.map(|c| c.to_string());
            request.package = package;
            request.health_batches = health_batches.max(1);
            match control.upgrade(request).await {
                Ok(outcome) => ControlReply::Upgraded(outcome),
                Err(e) => ControlReply::Error(e.to_string()),
            }
        }
    };
    let mut text = serde_json::to_string(&reply)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    Ok(())
}

/// Sends one request to the job listening on `socket` and waits for its answer.
pub async fn send(socket: &Path, request: &ControlRequest) -> anyhow::Result<ControlReply> {
    let stream = tokio::net::UnixStream::connect(socket).await.with_context(|| {
        format!("cannot reach a running job at {} (started with `flumen run --control …`?)", socket.display())
    })?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    if line.is_empty() {
        bail!("the job at {} ended before it answered", socket.display());
    }
    Ok(serde_json::from_str(&line)?)
}
