//! The routes: `POST /mutate` and `POST /validate` on the admission router,
//! `/healthz`, `/readyz` and `/metrics` on the side router. Reading the
//! body within its limit, mapping an unreadable request to its HTTP answer,
//! the in-flight gauge and the one tracing span per review live here; the
//! decision itself is the engine's.

use axum::body::{Body, HttpBody};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use futures::StreamExt;
use imgate_core::policy::HumanDuration;
use tracing::Instrument;

use crate::admission::Endpoint;
use crate::metrics::Metrics;
use crate::review::{self, AdmissionResponse};
use crate::server::limits::{BodyPermit, BodySource, Peer, BODY_RATE_WINDOW};
use crate::server::state::AppState;

/// The admission router: `POST /mutate`, `POST /validate`.
pub fn admission_router(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .with_state(state)
}

/// The side router: `/healthz`, `/readyz`, `/metrics`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.readiness().is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().encode(),
    )
        .into_response()
}

async fn mutate(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    body: Body,
) -> Response {
    handle(state, Endpoint::Mutate, peer.map(|p| p.0), body).await
}

async fn validate(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    body: Body,
) -> Response {
    handle(state, Endpoint::Validate, peer.map(|p| p.0), body).await
}

enum BodyError {
    TooLarge,
    TimedOut,
    TooSlow,
    Busy,
    Read(String),
}

/// The pace check of a body: every [`BODY_RATE_WINDOW`] must bring
/// `min_rate` bytes per second of it, or the body is too slow.
struct Pace {
    window_start: tokio::time::Instant,
    window_bytes: usize,
    min_bytes: usize,
}

impl Pace {
    fn new(min_rate: usize, now: tokio::time::Instant) -> Self {
        let window_ms = usize::try_from(BODY_RATE_WINDOW.as_millis()).unwrap_or(usize::MAX);
        Pace {
            window_start: now,
            window_bytes: 0,
            min_bytes: min_rate.saturating_mul(window_ms) / 1000,
        }
    }

    fn window_end(&self) -> tokio::time::Instant {
        self.window_start + BODY_RATE_WINDOW
    }

    /// Closes the windows that have ended: together they must have brought
    /// their share of bytes (several end at once only when this task was
    /// not polled for a while, and then the bytes arrive together).
    fn check(&mut self, now: tokio::time::Instant) -> Result<(), BodyError> {
        let elapsed = now.saturating_duration_since(self.window_start);
        let windows = elapsed.as_nanos() / BODY_RATE_WINDOW.as_nanos().max(1);
        if windows == 0 {
            return Ok(());
        }
        let windows = u32::try_from(windows).unwrap_or(u32::MAX);
        if self.window_bytes < self.min_bytes.saturating_mul(windows as usize) {
            return Err(BodyError::TooSlow);
        }
        self.window_start += BODY_RATE_WINDOW * windows;
        self.window_bytes = 0;
        Ok(())
    }
}

/// Reads at most `limit` bytes within the body deadline and at the body's
/// minimum pace, holding room for them in the shared body budget (by
/// capacity, so the buffer's growth is counted too). The body's first
/// bytes (as many as its declared length needs, up to the reserved part)
/// are reserved in one step before the pace starts counting; growth beyond
/// is granted or refused at once. Past the limit the rest is read and
/// discarded (up to a bound) so the client still receives the 413 instead
/// of a connection reset mid-upload.
async fn read_body(
    state: &AppState,
    peer: Option<&Peer>,
    body: Body,
) -> Result<(Vec<u8>, BodyPermit), BodyError> {
    let from = BodySource {
        address: peer.map(|p| p.address),
        proven: peer.is_some_and(|p| p.proven),
    };
    let limit = state.body_limit();
    let declared = usize::try_from(HttpBody::size_hint(&body).exact().unwrap_or(u64::MAX))
        .unwrap_or(usize::MAX);
    let read = async {
        let discard_bound = limit.saturating_mul(8);
        // A body longer than the limit is refused below, after being read.
        let wanted = declared.min(limit);
        let waiting = peer.map(|p| p.activity.waiting_for_budget());
        let mut permit = state
            .body_budget()
            .reserve(from, wanted)
            .await
            .map_err(|_| BodyError::Busy)?;
        drop(waiting);
        let mut out = Vec::with_capacity(permit.held());
        let mut stream = body.into_data_stream();
        let mut total = 0usize;
        let mut pace = Pace::new(state.min_body_rate(), tokio::time::Instant::now());
        loop {
            // The inner stream is polled before the timer, so data that
            // arrived while this task waited for a CPU is read, not held
            // against the client.
            let next = tokio::time::timeout_at(pace.window_end(), stream.next()).await;
            let chunk = match next {
                Err(_) => {
                    pace.check(tokio::time::Instant::now())?;
                    continue;
                }
                Ok(None) => break,
                Ok(Some(chunk)) => chunk.map_err(|err| BodyError::Read(err.to_string()))?,
            };
            pace.window_bytes = pace.window_bytes.saturating_add(chunk.len());
            pace.check(tokio::time::Instant::now())?;
            total = total.saturating_add(chunk.len());
            if total > limit {
                out = Vec::new();
                permit = BodyPermit::default();
                if total > discard_bound {
                    return Err(BodyError::TooLarge);
                }
                continue;
            }
            if total > out.capacity() {
                // Grow to the declared length, or like Vec would (doubling),
                // within the limit, but only once the budget has room.
                let capacity = if declared <= limit {
                    declared.max(total)
                } else {
                    total.max(out.capacity().saturating_mul(2)).min(limit)
                };
                state
                    .body_budget()
                    .grow(&mut permit, from, capacity)
                    .map_err(|_| BodyError::Busy)?;
                out.reserve_exact(capacity - out.len());
            }
            out.extend_from_slice(&chunk);
        }
        if total > limit {
            return Err(BodyError::TooLarge);
        }
        Ok((out, permit))
    };
    tokio::time::timeout(state.body_timeout(), read)
        .await
        .unwrap_or(Err(BodyError::TimedOut))
}

/// Keeps the in-flight gauge right even when a review is cancelled (the
/// API server hung up).
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn start(metrics: &'a Metrics) -> Self {
        metrics.review_started();
        InFlight(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.review_finished();
    }
}

fn plain(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

/// One admission request, from bytes to the answer. The mapping from a bad
/// request to an HTTP answer lives here and only here: a body we cannot
/// read at all is a 4xx (the API server applies `failurePolicy`); a review
/// with a readable uid gets an `invalid` response echoing it.
async fn handle(state: AppState, endpoint: Endpoint, peer: Option<Peer>, body: Body) -> Response {
    // The review deadline counts from here: reading the body, pull secrets
    // and registry work all spend the same budget.
    let arrived = std::time::Instant::now();
    let (bytes, _body_permit) = match read_body(&state, peer.as_ref(), body).await {
        Ok(read) => read,
        Err(BodyError::TooLarge) => {
            state.metrics().invalid_review();
            state.metrics().refused("body_too_large");
            let limit = state.body_limit();
            tracing::warn!(limit, "admission request body too large");
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("admission review body exceeds the limit of {limit} bytes"),
            );
        }
        Err(BodyError::TimedOut) => {
            state.metrics().invalid_review();
            state.metrics().refused("body_timeout");
            let timeout = HumanDuration(state.body_timeout());
            tracing::warn!(%timeout, "admission request body too slow");
            return plain(
                StatusCode::REQUEST_TIMEOUT,
                format!("admission review body not received within {timeout}"),
            );
        }
        Err(BodyError::TooSlow) => {
            state.metrics().invalid_review();
            state.metrics().refused("body_too_slow");
            let rate = state.min_body_rate();
            tracing::warn!(min_rate = rate, "admission request body too slow");
            return plain(
                StatusCode::REQUEST_TIMEOUT,
                format!("admission review body arrived at less than {rate} bytes per second"),
            );
        }
        Err(BodyError::Busy) => {
            state.metrics().invalid_review();
            state.metrics().refused("body_budget");
            tracing::warn!(
                "request bodies buffered at once (in all or from this source) are at their bound; refusing a large body"
            );
            let mut response = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many large request bodies in flight; retry".to_string(),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return response;
        }
        Err(BodyError::Read(detail)) => {
            state.metrics().invalid_review();
            return plain(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {detail}"),
            );
        }
    };
    let review = match review::parse_review(&bytes) {
        Ok(review) => review,
        Err(err) => {
            state.metrics().invalid_review();
            // ReviewError prints its own cause: no chain here.
            let message = err.to_string();
            tracing::warn!(error = %message, "invalid admission review");
            return match review::salvage_uid(&bytes) {
                Some(uid) => axum::Json(AdmissionResponse::invalid(&uid, message).into_review())
                    .into_response(),
                None => plain(StatusCode::BAD_REQUEST, message),
            };
        }
    };
    // One span per review, opened with what identifies the request, so every
    // line logged during the review, the decision line included, carries
    // these fields once. Filled at creation: recording them one by one
    // afterwards makes the JSON formatter re-parse the span's fields each time.
    let span = match &review.request {
        Some(request) => tracing::info_span!(
            "admission",
            uid = request.uid.as_str(),
            endpoint = endpoint.as_str(),
            kind = request.kind.kind.as_str(),
            namespace = request.namespace.as_deref().unwrap_or_default(),
            operation = request.operation.as_str(),
        ),
        None => tracing::info_span!("admission", endpoint = endpoint.as_str()),
    };
    async move {
        let _in_flight = InFlight::start(state.metrics());
        // The answer logs the decision line and observes the latency.
        let answer =
            crate::admission::answer_review(state.engine(), review, endpoint, arrived).await;
        axum::Json(answer).into_response()
    }
    .instrument(span)
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_body_must_keep_its_pace_every_second() {
        let start = tokio::time::Instant::now();
        let mut pace = Pace::new(1000, start);
        assert!(
            pace.check(start + ms(999)).is_ok(),
            "the first window is open"
        );
        // A burst, then nothing: the first second passes, the second not.
        pace.window_bytes = 64 * 1024;
        assert!(pace.check(start + ms(1001)).is_ok());
        assert!(matches!(
            pace.check(start + ms(2001)),
            Err(BodyError::TooSlow)
        ));
    }

    #[test]
    fn windows_missed_together_are_judged_together() {
        let start = tokio::time::Instant::now();
        let mut pace = Pace::new(1000, start);
        // Not polled for three seconds, then 3000 bytes at once: the pace
        // was kept on average over the three windows.
        pace.window_bytes = 3000;
        assert!(pace.check(start + ms(3001)).is_ok());
        // A trickle below the pace is not.
        pace.window_bytes = 999;
        assert!(matches!(
            pace.check(start + ms(4001)),
            Err(BodyError::TooSlow)
        ));
    }
}
