//! The Pingora `ProxyHttp` hooks, in the order a request meets them. Each
//! is a few lines that call into `request`, `upstream`, `response`,
//! `answer` and `log`: data flows one way, client → limiter →
//! upstream → normalizer → metrics and log.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::protocols::http::ServerSession;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, Result};

use super::ctx::Ctx;
use super::live::Live;
use super::response::EnvelopeTiming;
use super::{answer, headers, log, request, response, upstream};
use crate::admission::Admission;
use crate::rate_limit::Pending;

/// The proxy: every request runs under the runtime that is live when it
/// arrives.
pub struct Gateway {
    live: Arc<Live>,
    /// `upstream.max_in_flight`'s slots, for the life of the process.
    admission: Admission,
}

impl Gateway {
    pub fn new(live: Arc<Live>, admission: Admission) -> Self {
        Gateway { live, admission }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    /// Set-up, once: no response modules. Pingora's default is a
    /// compression module set to off, which still gave every request a
    /// module context and a filter call per header and body piece;
    /// tollgate does not compress (2xx bodies pass untouched, envelopes
    /// are small).
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    /// A request arrives: its state, under the live runtime.
    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.live.runtime())
    }

    /// The request header is in: identify the client, keep serving a
    /// pipelined connection, refuse broken framing, ask the limiter, check
    /// the declared body size, take a slot to the upstream; answer
    /// 400/429/503/413 here, or go on.
    ///
    /// async_trait boxes this future on every request, so it holds no
    /// large future inline: the shared backend's round trip and the
    /// writes of an answer are boxed on their own, only when they happen.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        request::identify(session, ctx);
        request::allow_pipelining(session);
        if let Some(answer) = request::check_framing(session) {
            Box::pin(answer::send(session, ctx, answer)).await?;
            return Ok(true);
        }
        let outcome = match request::decide(session, ctx) {
            Pending::Ready(outcome) => outcome,
            Pending::Shared(decision) => decision.await,
        };
        let refused =
            request::refusal(ctx, outcome).or_else(|| request::check_body_size(session, ctx));
        let refused = match refused {
            Some(answer) => Some(answer),
            None => upstream::admit(session, ctx, &self.admission).await?,
        };
        let Some(answer) = refused else {
            return Ok(false);
        };
        Box::pin(answer::send(session, ctx, answer)).await?;
        Ok(true)
    }

    /// Choose the upstream: the one configured, with its timeouts.
    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        upstream::note_sent(ctx);
        Ok(Box::new(upstream::peer(&ctx.rt.upstream)))
    }

    /// The request header leaves: add `X-Request-Id` and `X-Forwarded-For`.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        headers::add_to_upstream_request(upstream, request::peer_ip(session), ctx)
    }

    /// Each piece of the request body: count it against the limit, hold a
    /// body of unknown length until it is known to fit.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        request::hold_body(ctx, body, end_of_stream)
    }

    /// The upstream's response header arrives: note its status and time.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        upstream::note_answer(resp, ctx);
        Ok(())
    }

    /// The response header leaves: tollgate's headers on every final
    /// answer; an error's header readied for its envelope; a 2xx header
    /// held on a route that rewrites items' errors.
    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        if status < 200 {
            return Ok(());
        }
        headers::add_to_response(resp, ctx)?;
        if status < 400 {
            response::hold_for_items(session, resp, ctx);
            return Ok(());
        }
        match response::begin_envelope(session, resp, ctx)? {
            EnvelopeTiming::AtEndOfBody => Ok(()),
            // Boxed: the writes' state would otherwise ride in this hook's
            // future on every response.
            EnvelopeTiming::Now(body) => Box::pin(response::write_now(session, resp, body)).await,
        }
    }

    /// Each piece of the response body: an error's is gathered and
    /// replaced by its envelope at the end; a held 2xx body has its items'
    /// errors rewritten at the end; others pass untouched.
    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        response::gather_error_body(ctx, body, end_of_stream);
        response::gather_item_body(session, ctx, body, end_of_stream);
        Ok(None)
    }

    /// The request head could not be read (malformed, too large, too
    /// slow): answer 400/431/408 with the gateway's own envelope.
    async fn request_head_failed(&self, session: &mut ServerSession, e: &Error) -> bool {
        request::refuse_broken_head(session, e, Ctx::new(self.live.runtime())).await
    }

    /// Proxying failed: finish a broken envelope, or answer 502/504/4xx
    /// with the gateway's own.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy
    where
        Ctx: Send + Sync,
    {
        // The upstream is done with this request: its slot goes to the
        // next in line while the answer is written at the client's pace.
        upstream::release_slot(ctx);
        let failure = answer::classify(e);
        response::finish_broken_envelope(session, ctx).await;
        let error_code = answer::send_failure(session, ctx, failure).await;
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    /// Pingora logs every failed request at ERROR; a client that left (one
    /// that gave up while its request waited in line, or closed mid-answer)
    /// is not the gateway's failure, and its access line records it.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, e: &Error) -> bool {
        answer::client_gone(e)
    }

    /// The request is done: metrics, and the access line when it failed.
    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        log::finish(session, ctx);
    }
}
