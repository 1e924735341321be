//! Hot reload of the serving certificate and the policy: both files are
//! polled (by content, since a ConfigMap or Secret update swaps a symlink
//! and mtimes are unreliable) and re-read on SIGHUP. A broken new version
//! never replaces a working one: it is logged, counted, and the old one
//! keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use imgate_core::Digest;

use crate::server::shutdown::stopped;
use crate::server::state::{load_policy, AppState, Settings};
use crate::server::tls::{Reload, ReloadingCert};

/// Polls the certificate and policy files (and reacts to SIGHUP) until stopped.
pub(crate) async fn reload_loop(
    state: AppState,
    settings: Settings,
    cert: Arc<ReloadingCert>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut policy_watch = PolicyWatch::new(&settings.policy);
    // What was loaded at start-up is the baseline, not a change.
    policy_watch.prime(&state);
    let mut ticker =
        tokio::time::interval(settings.reload_interval.max(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => futures::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup = futures::future::pending::<()>();
        let force = tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = ticker.tick() => false,
            _ = hup => {
                tracing::info!("SIGHUP received, reloading the certificate and policy");
                true
            }
        };
        reload_cert(&state, &cert, force);
        policy_watch.check(&state, force);
    }
}

fn reload_cert(state: &AppState, cert: &ReloadingCert, force: bool) {
    match cert.reload(force) {
        Reload::Unchanged => {}
        Reload::Reloaded => {
            state.metrics().tls_reload(true);
            tracing::info!(cert = %cert.cert_path().display(), "tls certificate reloaded");
        }
        Reload::Failed(error) => {
            state.metrics().tls_reload(false);
            tracing::warn!(%error, "new tls certificate refused; the previous one keeps serving");
        }
    }
}

/// Notices policy file changes by content (a ConfigMap update swaps a
/// symlink; mtimes are unreliable) and reports each new content once. The
/// files the policy names (key files, trusted roots) count as its content:
/// a refreshed `trusted_root.json` or a rotated key is picked up too.
struct PolicyWatch {
    path: PathBuf,
    seen: Option<Digest>,
}

impl PolicyWatch {
    fn new(path: &Path) -> Self {
        PolicyWatch {
            path: path.to_path_buf(),
            seen: None,
        }
    }

    /// The policy's bytes followed by those of every file it names, each
    /// with its length (a missing file counts as empty).
    fn content(bytes: &[u8], state: &AppState) -> Digest {
        let mut all = Vec::with_capacity(bytes.len());
        let mut add = |part: &[u8]| {
            all.extend_from_slice(&(part.len() as u64).to_be_bytes());
            all.extend_from_slice(part);
        };
        add(bytes);
        for file in state.engine().policy().referenced_files() {
            add(&std::fs::read(&file).unwrap_or_default());
        }
        Digest::sha256(&all)
    }

    fn prime(&mut self, state: &AppState) {
        self.seen = std::fs::read(&self.path)
            .ok()
            .map(|bytes| Self::content(&bytes, state));
    }

    fn check(&mut self, state: &AppState, force: bool) {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(err) => {
                // Mid-update the file can vanish for an instant: report it
                // once and keep the old policy.
                if self.seen.is_some() || force {
                    self.seen = None;
                    state.metrics().policy_reload(false);
                    tracing::error!(policy = %self.path.display(), error = %err, "cannot read the policy; the previous policy stays in force");
                }
                return;
            }
        };
        let print = Self::content(&bytes, state);
        if self.seen.as_ref() == Some(&print) && !force {
            return;
        }
        self.seen = Some(print);
        match load_policy(&self.path) {
            Ok(policy) => {
                for warning in policy.warnings() {
                    tracing::warn!(policy = %self.path.display(), "{warning}");
                }
                if policy
                    .registries
                    .keys()
                    .ne(state.engine().policy().registries.keys())
                {
                    // The registry client is built once at start-up.
                    tracing::warn!(policy = %self.path.display(), "the registries section changed: restart the webhook to apply new registry connection settings");
                }
                state.engine().replace_policy(policy);
                state.metrics().policy_reload(true);
                tracing::info!(policy = %self.path.display(), "policy reloaded");
            }
            Err(err) => {
                state.metrics().policy_reload(false);
                tracing::error!(error = %imgate_core::error_chain(&err), "new policy refused; the previous policy stays in force");
            }
        }
    }
}
