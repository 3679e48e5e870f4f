//! The daemon's log on stderr: colour only on a terminal and without
//! `NO_COLOR`; fuser's complaint about a reply the kernel no longer wanted
//! is not shown as an error.
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// `debug`: `-o debug`; `default`: the filter when `RUST_LOG` is unset.
pub fn init(debug: bool, default: &str) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ if debug => EnvFilter::new("debug"),
        _ => EnvFilter::new(default),
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_writer(std::io::stderr);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with((!debug).then_some(DroppedReplies))
        .with(fmt)
        .try_init();
}

/// Colour only for a terminal, and not when `NO_COLOR` is set to anything
/// but the empty string (no-color.org).
pub fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Drops fuser's `Failed to send FUSE reply: No such file or directory`:
/// the kernel answers a reply with ENOENT when the request was interrupted
/// (the caller got a signal, e.g. Ctrl-C during `apt-get`) and it has
/// already told the caller EINTR, so nothing was lost. Every other failure
/// to send, and every other message of `fuser::reply` (a handler that
/// dropped its reply, which the caller sees as EIO), still shows.
struct DroppedReplies;

const REPLY_TARGET: &str = "fuser::reply";
const REPLY_FAILED: &str = "Failed to send FUSE reply";
/// How `io::Error` shows ENOENT.
const ENOENT_TEXT: &str = "(os error 2)";

#[derive(Default)]
struct ReplyFields {
    target_is_reply: bool,
    interrupted: bool,
}

impl Visit for ReplyFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "log.target" {
            self.target_is_reply = value == REPLY_TARGET;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let text = format!("{value:?}");
            self.interrupted = text.starts_with(REPLY_FAILED) && text.contains(ENOENT_TEXT);
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for DroppedReplies {
    fn event_enabled(&self, event: &tracing::Event<'_>, _: Context<'_, S>) -> bool {
        let mut f = ReplyFields {
            target_is_reply: event.metadata().target() == REPLY_TARGET,
            ..ReplyFields::default()
        };
        event.record(&mut f);
        !(f.target_is_reply && f.interrupted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> Layer<S> for Count {
        fn on_event(&self, _: &tracing::Event<'_>, _: Context<'_, S>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// fuser logs through the `log` crate, bridged into tracing: only its
    /// complaint about an interrupted request's reply is dropped.
    #[test]
    fn only_replies_to_interrupted_requests_are_dropped() {
        let seen = Arc::new(AtomicUsize::new(0));
        tracing_subscriber::registry()
            .with(DroppedReplies)
            .with(Count(seen.clone()))
            .try_init()
            .unwrap();
        let shown = |f: &dyn Fn()| {
            let before = seen.load(Ordering::SeqCst);
            f();
            seen.load(Ordering::SeqCst) - before
        };
        let enoent = std::io::Error::from_raw_os_error(libc::ENOENT);
        let enodev = std::io::Error::from_raw_os_error(libc::ENODEV);
        let dropped = || log::error!(target: "fuser::reply", "Failed to send FUSE reply: {enoent}");
        assert_eq!(shown(&dropped), 0);
        let other = || log::error!(target: "fuser::reply", "Failed to send FUSE reply: {enodev}");
        assert_eq!(shown(&other), 1);
        let eio = || log::warn!(target: "fuser::reply", "Reply not sent for operation 7");
        assert_eq!(shown(&eio), 1);
        let ours = || tracing::error!("copy-up of /x: {enoent}");
        assert_eq!(shown(&ours), 1);
        let native =
            || tracing::error!(target: "fuser::reply", "Failed to send FUSE reply: {enoent}");
        assert_eq!(shown(&native), 0);
    }

    #[test]
    fn colour_rules() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }
}
