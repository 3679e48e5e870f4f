//! The signal sets that stop a daemon or a run.
//!
//! Both are blocked in every thread and taken by one thread alone
//! (`sigwait` or a signalfd), so a stop never interrupts a request or a
//! `waitpid` half-way.
use nix::sys::signal::{SigSet, Signal};

/// What ends a daemon: it unmounts lazily and removes its workdir.
pub const DAEMON_STOP: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// What a run forwards to its command (SIGQUIT too, as a shell does).
pub const RUN_STOP: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// The set of `signals`.
pub fn set_of(signals: &[Signal]) -> SigSet {
    let mut s = SigSet::empty();
    for &sig in signals {
        s.add(sig);
    }
    s
}

/// The signals that end a daemon, as a set.
pub fn daemon_stop_set() -> SigSet {
    set_of(&DAEMON_STOP)
}

/// The signals the launcher forwards to its command (and its keeper
/// keeps blocked), as a set.
pub fn run_stop_set() -> SigSet {
    set_of(&RUN_STOP)
}
