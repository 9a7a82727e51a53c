//! Every request is held to the server's timeouts: a body that stops sending
//! is cut after the idle timeout (its upload fails and leaves nothing), and a
//! request whose response has not started by the request timeout gets 408.
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::body::HttpBody as _;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::Stream;

use super::{ApiError, AppState};

/// The middleware: the body wrapped in an idle timer, the handler in a
/// deadline.
pub async fn bounded(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let limits = s.limits;
    let (parts, body) = req.into_parts();
    let has_body = !body.is_end_stream();
    let idle = Idle::new(body.into_data_stream(), limits.body_idle_timeout);
    let ended = idle.ended.clone();
    let req = Request::from_parts(parts, axum::body::Body::from_stream(idle));
    let mut response = match tokio::time::timeout(limits.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::timeout(format!(
            "the request took longer than {} s",
            limits.request_timeout.as_secs()
        ))
        .into_response(),
    };
    // Answered before its body was read (refused, too large): the rest of
    // the body is still on the wire, so this connection cannot carry another
    // request. Say so, or a client reuses it and its next call fails.
    if has_body && !ended.load(Ordering::Relaxed) {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// The error a stalled body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0} s")]
pub struct Stalled(u64);

/// A body stream that fails once it goes `idle` without a chunk.
struct Idle<S> {
    inner: S,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The timer runs from the handler's first read: time a handler spends
    /// before reading (waiting for a lock, say) is not the client's.
    armed: bool,
    /// The body was read to its end.
    ended: Arc<AtomicBool>,
}

impl<S> Idle<S> {
    fn new(inner: S, idle: Duration) -> Idle<S> {
        Idle {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            armed: false,
            ended: Arc::default(),
        }
    }
}

impl<S, E> Stream for Idle<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<axum::BoxError>,
{
    type Item = Result<Bytes, axum::BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if !self.armed {
            self.armed = true;
            let deadline = tokio::time::Instant::now() + self.idle;
            self.timer.as_mut().reset(deadline);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(item) => {
                if item.is_none() {
                    self.ended.store(true, Ordering::Relaxed);
                }
                let deadline = tokio::time::Instant::now() + self.idle;
                self.timer.as_mut().reset(deadline);
                Poll::Ready(item.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Stalled(self.idle.as_secs()))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
