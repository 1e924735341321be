//! Bounds on what a client of the admission port can hold: time (TLS
//! handshake, request headers, the body's pace and its whole duration,
//! idle keep-alive), open connections, handshakes in progress, HTTP/2
//! streams and the bytes of request bodies buffered at once, in total and
//! per source address. An admission webhook that stops answering blocks
//! every pod in the cluster, so no client, and no crowd of clients, may
//! crowd out the API server.
//!
//! - Connections ([`Connections`]): at most `max_connections` are open,
//!   at most `max_connections_per_source` from one source address, of
//!   which at most `max_handshakes_per_source` are still in their TLS
//!   handshake. At the global bound a newcomer may only displace a
//!   connection that has never completed a request (and, with client
//!   certificates required, is not yet authenticated) and is not serving a
//!   request (a body still waiting for room does not count), taken from
//!   the source holding the most connections; otherwise accept waits. The API server's kept-alive connections have
//!   completed requests, so a flood of newcomers never sheds them.
//! - Bodies ([`BodyBudget`]): each body's first [`RESERVED_PER_BODY`]
//!   bytes (all of a typical review) come from a quarter of
//!   `max_buffered_bytes` reserved for connections that have completed a
//!   request, or from another quarter for the others, in one step and
//!   granted to the waiting body whose source holds the least; bytes
//!   beyond come from the remaining half and are refused at once (503)
//!   when it is spent. Every byte also counts against its source's share
//!   (`max_body_bytes_per_source`). A body must keep arriving at
//!   `min_body_rate` bytes per second, or it is refused (408) and its bytes
//!   freed: a stalled body holds memory for about two seconds, not ten.

use std::time::Duration;

mod budget;
mod connections;

pub use budget::{BodyBudget, BodyPermit, BodySource, BudgetError};
pub use connections::{Activity, Connections, Peer, Refusal, RequestGuard, Slot, WaitGuard};

/// Default time for a TLS handshake.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time for a request's headers to arrive (HTTP/1).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time for a whole request body to arrive.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default pace a request body must keep, in bytes per second.
pub const DEFAULT_MIN_BODY_RATE: usize = 16 * 1024;
/// The window over which a body's pace is measured: every such window
/// after the body's first read must bring `min_body_rate` bytes (times the
/// window) or finish the body.
pub const BODY_RATE_WINDOW: Duration = Duration::from_secs(1);
/// Default time a connection may sit without a request in flight.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default HTTP/2 keep-alive ping interval.
pub const DEFAULT_HTTP2_KEEPALIVE: Duration = Duration::from_secs(30);
/// How long an HTTP/2 keep-alive ping may go unanswered.
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on concurrent HTTP/2 streams per connection.
pub const DEFAULT_HTTP2_MAX_STREAMS: u32 = 64;
/// Default cap on open admission connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1000;
/// Default cap on open admission connections from one source address.
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: usize = 250;
/// Default cap on TLS handshakes in progress from one source address.
pub const DEFAULT_MAX_HANDSHAKES_PER_SOURCE: usize = 32;
/// Default cap on request-body bytes buffered at once.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 64 * 1024 * 1024;
/// Default cap on request-body bytes buffered at once for one source address.
pub const DEFAULT_MAX_BUFFERED_BYTES_PER_SOURCE: usize = 16 * 1024 * 1024;
/// Bytes of each body served from a reserve (see the module docs).
pub const RESERVED_PER_BODY: usize = 64 * 1024;
/// File descriptors kept free for everything that is not a client
/// connection (registry connections, policy and certificate reads, logs).
pub const FD_RESERVE: u64 = 128;

/// The connection and body limits of the admission port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortLimits {
    /// Time for a TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time for a request's headers (HTTP/1).
    pub header_read_timeout: Duration,
    /// Time for a whole request body, from the handler's first read.
    pub body_timeout: Duration,
    /// Bytes per second a body must keep arriving at (measured over each
    /// [`BODY_RATE_WINDOW`]).
    pub min_body_rate: usize,
    /// Time a connection may sit with no request in flight (HTTP/1
    /// keep-alive and HTTP/2 alike).
    pub idle_timeout: Duration,
    /// HTTP/2 keep-alive ping interval (a dead peer is dropped after
    /// [`HTTP2_KEEPALIVE_TIMEOUT`] more).
    pub http2_keepalive: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub http2_max_streams: u32,
    /// Open admission connections.
    pub max_connections: usize,
    /// Open admission connections from one source address.
    pub max_connections_per_source: usize,
    /// TLS handshakes in progress from one source address.
    pub max_handshakes_per_source: usize,
    /// Request-body bytes buffered at once, over all requests.
    pub max_buffered_bytes: usize,
    /// Request-body bytes buffered at once for one source address.
    pub max_buffered_bytes_per_source: usize,
}

impl Default for PortLimits {
    fn default() -> Self {
        PortLimits {
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            min_body_rate: DEFAULT_MIN_BODY_RATE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            http2_keepalive: DEFAULT_HTTP2_KEEPALIVE,
            http2_max_streams: DEFAULT_HTTP2_MAX_STREAMS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_source: DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
            max_handshakes_per_source: DEFAULT_MAX_HANDSHAKES_PER_SOURCE,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            max_buffered_bytes_per_source: DEFAULT_MAX_BUFFERED_BYTES_PER_SOURCE,
        }
    }
}

/// Raises the soft limit on open files to the hard limit (containers often
/// start with 1024) and returns the soft limit in force afterwards, if it
/// can be read.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = getrlimit(Resource::Nofile),
            Err(err) => tracing::warn!(error = %err, "cannot raise the open-files limit"),
        }
    }
    // None means unlimited.
    Some(limit.current.unwrap_or(u64::MAX))
}

/// `max_connections`, lowered if the open-files limit could not hold that
/// many plus [`FD_RESERVE`].
pub fn fit_connections(max_connections: usize, fd_limit: Option<u64>) -> usize {
    let Some(fds) = fd_limit else {
        return max_connections;
    };
    let room = usize::try_from(fds.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
    max_connections.min(room).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_the_open_files_limit() {
        assert_eq!(fit_connections(1000, Some(1024)), 896);
        assert_eq!(fit_connections(1000, Some(20_000)), 1000);
        assert_eq!(fit_connections(1000, None), 1000);
        assert_eq!(fit_connections(1000, Some(10)), 1);
    }
}
