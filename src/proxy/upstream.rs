//! The upstream: where requests go, and what it answered.

use std::time::{Duration, Instant};

use pingora::http::ResponseHeader;
use pingora::upstreams::peer::HttpPeer;

use super::ctx::Ctx;
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

/// Note that the request leaves for the upstream now.
pub fn note_sent(ctx: &mut Ctx) {
    ctx.upstream.sent_at = Some(Instant::now());
}

/// Record the upstream's final status and how long it took to answer.
pub fn note_answer(resp: &ResponseHeader, ctx: &mut Ctx) {
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
