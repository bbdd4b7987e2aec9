//! What the gateway knows about one request, from its first hook to its
//! log line.

use crate::admission::Slot;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::runtime::Runtime;
use crate::client::{ClientKey, RequestId};
use crate::errors::items::HeldBody;
use crate::errors::{CollectedError, Envelope, ErrorClass, ErrorFormat, ErrorTable, Source};
use crate::observe::FailureKind;
use crate::rate_limit::Decision;
use crate::routes::{RouteId, DEFAULT_ROUTE};

/// One request's state. Moved with every request, so the rare parts are
/// boxed.
pub struct Ctx {
    /// The config this request runs under, start to end, even if a reload
    /// swaps it meanwhile.
    pub rt: Arc<Runtime>,
    pub start: Instant,
    pub request_id: RequestId,
    /// `None` when the peer has no IP address (nothing is limited then).
    pub client_ip: Option<IpAddr>,
    /// The client's bucket key, made once from `client_ip`.
    pub client_key: Option<ClientKey>,
    pub route: RouteId,
    /// A HEAD request: answers carry no body.
    pub head: bool,
    pub decision: Decision,
    pub request_body: RequestBody,
    pub upstream: UpstreamSeen,
    /// An upstream error whose body is being gathered for its envelope.
    pub collecting: Option<Box<CollectedError>>,
    /// A 2xx body held for its items' errors (routes with `item_errors`).
    pub items: Option<Box<HeldBody>>,
    /// The form of the error body sent for an upstream error (chosen
    /// with its header).
    pub error_format: ErrorFormat,
    /// The error the client was told, for the log.
    pub sent: Option<SentError>,
    /// Why the upstream gave no usable answer, when it did not.
    pub failure: Option<FailureKind>,
    /// The status of a failed proxy attempt when no response was written
    /// (`None`: the client was gone, nothing could be sent).
    pub failed_status: Option<u16>,
}

impl Ctx {
    pub fn new(rt: Arc<Runtime>) -> Ctx {
        Ctx {
            rt,
            start: Instant::now(),
            request_id: RequestId::default(),
            client_ip: None,
            client_key: None,
            route: DEFAULT_ROUTE,
            head: false,
            decision: Decision::default(),
            request_body: RequestBody::default(),
            upstream: UpstreamSeen::default(),
            collecting: None,
            items: None,
            error_format: ErrorFormat::Envelope,
            sent: None,
            failure: None,
            failed_status: None,
        }
    }
}

/// The request body, counted against `server.max_request_body_bytes`.
#[derive(Default)]
pub struct RequestBody {
    /// A body of unknown length is held until it is known to fit.
    pub hold: bool,
    pub held: BytesMut,
    /// Bytes received so far.
    pub received: u64,
}

/// What the upstream did, for the metrics and the log.
#[derive(Default)]
pub struct UpstreamSeen {
    /// When the request was handed to the upstream connection.
    pub sent_at: Option<Instant>,
    /// The final (non-1xx) status it answered.
    pub status: Option<u16>,
    /// One of the `upstream.max_in_flight` slots, held until the
    /// upstream's response header arrives.
    pub slot: Option<Slot>,
}

/// An upstream error as the client received it, for the log.
pub struct NormalizedError {
    pub envelope: Envelope,
    pub source: Source,
    pub upstream_ref: Option<String>,
}

/// What error the client was told, for the log.
pub enum SentError {
    // Boxed: rare, and a `Ctx` is moved with every request.
    Normalized(Box<NormalizedError>),
    /// An answer the gateway made itself: its type and code follow from
    /// the status (the error table), so only the message is kept.
    Gateway {
        status: u16,
        message: Cow<'static, str>,
    },
}

/// The envelope's type, code and message, as the log writes them.
pub struct ErrorSummary<'a> {
    pub kind: Cow<'a, str>,
    pub code: Cow<'a, str>,
    pub message: &'a str,
}

impl SentError {
    pub fn summary<'a>(&'a self, table: &ErrorTable) -> ErrorSummary<'a> {
        match self {
            SentError::Normalized(n) => ErrorSummary {
                kind: Cow::Borrowed(&n.envelope.kind),
                code: Cow::Borrowed(&n.envelope.code),
                message: &n.envelope.message,
            },
            SentError::Gateway { status, message } => {
                let ErrorClass { kind, code } = table.type_and_code(*status);
                ErrorSummary {
                    kind,
                    code,
                    message,
                }
            }
        }
    }

    /// The normalized upstream error, when that is what was sent.
    pub fn normalized(&self) -> Option<&NormalizedError> {
        match self {
            SentError::Normalized(n) => Some(n),
            SentError::Gateway { .. } => None,
        }
    }
}
