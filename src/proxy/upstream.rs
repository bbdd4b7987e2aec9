//! The upstream: where requests go, and what it answered.

use std::time::{Duration, Instant};

use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use prometheus::IntGauge;

use super::answer::GatewayAnswer;
use super::ctx::Ctx;
use super::request;
use crate::admission::{Admission, QueueTimedOut};
use crate::config::UpstreamSettings;

/// How long an idle pooled upstream connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The peer for one request, with the configured timeouts.
pub fn peer(u: &UpstreamSettings) -> HttpPeer {
    let mut peer = HttpPeer::new(u.addr, u.tls, u.sni.clone());
    peer.options.connection_timeout = Some(u.connect_timeout);
    peer.options.total_connection_timeout = Some(u.connect_timeout);
    peer.options.read_timeout = Some(u.read_timeout);
    peer.options.write_timeout = Some(u.read_timeout);
    peer.options.idle_timeout = Some(IDLE_TIMEOUT);
    peer
}

/// Take one of the `upstream.max_in_flight` slots (docs/behaviour.md,
/// "Requests in flight to the upstream"): at once when one is free, else
/// in line; a 503 answer when none frees up within `upstream.queue_timeout`.
/// A request with a body goes on without one: its pace is the client's,
/// and a slow sender must not hold the slot others wait for. A request
/// whose client left while it waited ends there, unsent.
pub async fn admit(
    session: &mut Session,
    ctx: &mut Ctx,
    admission: &Admission,
) -> Result<Option<GatewayAnswer>> {
    if !session.is_body_empty() {
        return Ok(None);
    }
    if let Some(slot) = admission.try_admit() {
        ctx.upstream.slot = Some(slot);
        return Ok(None);
    }
    // Boxed: the wait's state would otherwise ride in every request's
    // future.
    Box::pin(wait_in_line(session, ctx, admission)).await
}

async fn wait_in_line(
    session: &mut Session,
    ctx: &mut Ctx,
    admission: &Admission,
) -> Result<Option<GatewayAnswer>> {
    let metrics = ctx.rt.metrics.clone();
    let admitted = {
        // Counted while in line, also when the wait is cancelled (a
        // shutdown).
        let _in_line = InLine::new(&metrics.upstream_queued);
        let wait = admission.admit(ctx.rt.upstream.queue_timeout);
        match session.as_downstream_mut().watch_h2_stream_close() {
            // An HTTP/2 client resets a stream it no longer wants.
            Some(reset) => tokio::select! {
                admitted = wait => Some(admitted),
                _ = reset => None,
            },
            None => Some(wait.await),
        }
    };
    match admitted {
        None => Err(client_gone()),
        Some(Ok(_)) if request::client_left(session) => Err(client_gone()),
        Some(Ok(slot)) => {
            ctx.upstream.slot = Some(slot);
            Ok(None)
        }
        Some(Err(QueueTimedOut)) => {
            metrics.upstream_queue_timeouts.inc();
            Ok(Some(GatewayAnswer::upstream_busy(
                ctx.rt.upstream.queue_timeout,
            )))
        }
    }
}

/// The request ends as one whose client went away (status 0 in the log).
fn client_gone() -> Box<Error> {
    Error::explain(
        ErrorType::ConnectionClosed,
        "the client left while its request waited for an upstream slot",
    )
    .into_down()
}

/// `tollgate_upstream_queued` counts a request for as long as this lives.
struct InLine<'a>(&'a IntGauge);

impl<'a> InLine<'a> {
    fn new(gauge: &'a IntGauge) -> InLine<'a> {
        gauge.inc();
        InLine(gauge)
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Give the request's slot, if it holds one, to the next in line.
pub fn release_slot(ctx: &mut Ctx) {
    ctx.upstream.slot = None;
}

/// Note that the request leaves for the upstream now.
pub fn note_sent(ctx: &mut Ctx) {
    ctx.upstream.sent_at = Some(Instant::now());
}

/// Record the upstream's final status and how long it took to answer;
/// free the request's slot for the next in line once the upstream has
/// answered (a final status, or 101: what follows an upgrade is the
/// client's and the upstream's, however long it lasts).
pub fn note_answer(resp: &ResponseHeader, ctx: &mut Ctx) {
    let upgraded = resp.status == StatusCode::SWITCHING_PROTOCOLS;
    if upgraded || !resp.status.is_informational() {
        release_slot(ctx);
    }
    if resp.status.is_informational() {
        return;
    }
    ctx.upstream.status = Some(resp.status.as_u16());
    if let Some(sent) = ctx.upstream.sent_at {
        ctx.rt.route_metrics[ctx.route]
            .upstream_duration
            .observe(sent.elapsed().as_secs_f64());
    }
}
