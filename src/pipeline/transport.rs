//! RTSP transport fallback: which lower transport each attempt to open a
//! camera uses, and the error once every one was tried.
//!
//! rtspsrc given several protocols tries UDP first and falls back to TCP
//! only after its UDP timeout, so TCP first (the robust choice through NAT
//! and firewalls) has to be camstream's own logic: one attempt per
//! transport, each a pipeline of its own. The camera supervisor and
//! `camstream probe` both walk the transports with [`TransportFallback`],
//! so a probe fails with exactly the message the camera would show.

use std::fmt;

use super::PipelineError;
use crate::source::{LowerTransport, Transport};

/// Why one lower transport did not work with a server. Another transport
/// may still work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportFailure {
    pub transport: LowerTransport,
    /// `host:port` of the RTSP server.
    pub at: String,
    pub kind: FailureKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The server set up no stream over this transport: it answered SETUP
    /// with 461 Unsupported Transport (rtspsrc: "No supported stream was
    /// found. You might need to allow more transport protocols").
    Refused,
    /// The server set up RTP over UDP, but no packet arrived within
    /// rtspsrc's UDP timeout (seconds): something drops UDP on the way.
    NoUdpPackets { after_s: u32 },
}

impl fmt::Display for TransportFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let TransportFailure {
            transport,
            at,
            kind,
        } = self;
        match kind {
            FailureKind::Refused => write!(
                f,
                "the RTSP server at {at} set up no stream over {} (it answered 461 Unsupported \
                 Transport, or offered only other transports)",
                transport.name()
            ),
            FailureKind::NoUdpPackets { after_s } => write!(
                f,
                "the RTSP server at {at} set up RTP over UDP, but no packet arrived within {after_s} s \
                 (a firewall or NAT between the camera and camstream drops UDP)"
            ),
        }
    }
}

/// The error once every transport tried for a camera failed: what was
/// tried, and what to check.
pub(super) fn no_transport_message(tried: &[TransportFailure], pinned: bool) -> String {
    match (tried, pinned) {
        ([only], true) => {
            let hint = match (only.transport, only.kind) {
                (LowerTransport::Tcp, _) => {
                    "the camera may offer RTP over UDP only: leave transport out (auto: TCP, then UDP) \
                     or set transport = \"udp\""
                }
                (LowerTransport::Udp, FailureKind::Refused) => {
                    "the camera may offer RTP over TCP only: leave transport out (auto: TCP, then UDP) \
                     or set transport = \"tcp\""
                }
                (LowerTransport::Udp, FailureKind::NoUdpPackets { .. }) => {
                    "carry RTP on the RTSP connection instead: leave transport out (auto: TCP, then UDP) \
                     or set transport = \"tcp\""
                }
            };
            format!("{only}: {hint}")
        }
        _ => {
            let tried_names: Vec<_> = tried.iter().map(|f| f.transport.name()).collect();
            let each: Vec<_> = tried.iter().map(ToString::to_string).collect();
            format!(
                "no RTSP transport worked (tried {}): {}. Check the camera's RTSP settings \
                 (RTP over TCP or UDP enabled for this stream) and that no firewall between the \
                 camera and camstream drops UDP",
                tried_names.join(", then "),
                each.join("; ")
            )
        }
    }
}

/// One (re)start's walk through the lower transports of an RTSP camera:
/// the one to try now, and the failures so far.
#[derive(Clone, Debug)]
pub struct TransportFallback {
    order: Vec<LowerTransport>,
    next: usize,
    tried: Vec<TransportFailure>,
}

impl TransportFallback {
    /// `setting` is the camera's `transport`, `forced` what its URL scheme
    /// forces, `remembered` what worked for it last (auto only). An empty
    /// walk (`rtsp` false) is for sources that are not RTSP.
    pub fn new(
        rtsp: bool,
        setting: Transport,
        forced: Option<LowerTransport>,
        remembered: Option<LowerTransport>,
    ) -> TransportFallback {
        TransportFallback {
            order: if rtsp {
                setting.order(forced, remembered)
            } else {
                Vec::new()
            },
            next: 0,
            tried: Vec::new(),
        }
    }

    /// The transport to try now; None for sources that are not RTSP.
    pub fn current(&self) -> Option<LowerTransport> {
        self.order.get(self.next).copied()
    }

    /// Whether the current transport is a fall back from another.
    pub fn is_fallback(&self) -> bool {
        self.next > 0
    }

    /// Takes a failed attempt's error. A transport failure with another
    /// transport left moves on to it and returns None: try again at once.
    /// Anything else is returned as the error to report: a transport
    /// failure with nothing left becomes [`PipelineError::NoTransport`],
    /// naming every transport tried.
    pub fn failed(&mut self, error: PipelineError) -> Option<PipelineError> {
        let PipelineError::Transport(failure) = error else {
            return Some(error);
        };
        self.tried.push(failure);
        if self.next + 1 < self.order.len() {
            self.next += 1;
            return None;
        }
        Some(PipelineError::NoTransport {
            message: no_transport_message(&self.tried, self.order.len() == 1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(transport: LowerTransport) -> PipelineError {
        PipelineError::Transport(TransportFailure {
            transport,
            at: "cam:554".into(),
            kind: FailureKind::Refused,
        })
    }

    #[test]
    fn auto_falls_back_once_then_names_both() {
        let mut walk = TransportFallback::new(true, Transport::Auto, None, None);
        assert_eq!(walk.current(), Some(LowerTransport::Tcp));
        assert_eq!(walk.failed(refused(LowerTransport::Tcp)), None);
        assert_eq!(walk.current(), Some(LowerTransport::Udp));
        assert!(walk.is_fallback());
        let Some(PipelineError::NoTransport { message }) =
            walk.failed(refused(LowerTransport::Udp))
        else {
            panic!("both tried")
        };
        assert!(message.contains("tried TCP, then UDP"), "{message}");
        assert!(message.contains("no stream over TCP"), "{message}");
        assert!(message.contains("no stream over UDP"), "{message}");
    }

    #[test]
    fn other_errors_end_the_walk_as_they_are() {
        let mut walk = TransportFallback::new(true, Transport::Auto, None, None);
        let error = PipelineError::Runtime("401".into());
        assert_eq!(walk.failed(error.clone()), Some(error));
    }

    #[test]
    fn a_remembered_transport_goes_first_and_a_pinned_one_alone() {
        let walk = TransportFallback::new(true, Transport::Auto, None, Some(LowerTransport::Udp));
        assert_eq!(walk.order, [LowerTransport::Udp, LowerTransport::Tcp]);
        let mut walk = TransportFallback::new(true, Transport::Tcp, None, None);
        let Some(PipelineError::NoTransport { message }) =
            walk.failed(refused(LowerTransport::Tcp))
        else {
            panic!("pinned")
        };
        assert!(message.contains("set transport = \"udp\""), "{message}");
        let walk = TransportFallback::new(true, Transport::Auto, Some(LowerTransport::Udp), None);
        assert_eq!(walk.order, [LowerTransport::Udp]);
        assert_eq!(
            TransportFallback::new(false, Transport::Auto, None, None).current(),
            None
        );
    }
}
