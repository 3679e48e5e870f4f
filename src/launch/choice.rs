//! Which backend serves the union for one run (SPEC §5).
//!
//! Everything here is pure: the caller reads the environment and the image
//! and passes the values in, so the whole decision matrix is testable without
//! touching the process environment.
//!
//! Order, first match wins:
//! 1. `FIM_OVERLAY` equal to exactly `bwrap`, `overlayfs` or `unionfs`
//!    (case-sensitive; any other value, including empty, is ignored);
//! 2. the overlay byte of the image (`0x02`, `0x04`, `0x08`; anything else is unset);
//! 3. BWRAP.
//!
//! Then casefold (the `--casefold` flag, `FIM_CASEFOLD=1` exactly, or a
//! non-zero casefold byte) never uses BWRAP: the kernel overlay cannot fold
//! case. It becomes [`CASEFOLD_BACKEND`], i.e. UNIONFS, exactly as
//! FlatImage's source does (`config.hpp`: "casefold cannot be used with
//! bwrap overlayfs, falling back to unionfs"), so `overlay show` prints what
//! FlatImage prints. In fimfs OVERLAYFS and UNIONFS are the same in-process
//! daemon; only the label differs.

use std::ffi::OsStr;
use std::fmt;
use std::str::FromStr;

/// The backend that serves the union for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The kernel overlay, mounted by bubblewrap (`--overlay-src … --overlay`).
    Bwrap,
    /// The fimfs daemon (FlatImage's fuse-overlayfs slot).
    Overlayfs,
    /// The fimfs daemon (FlatImage's unionfs-fuse slot).
    Unionfs,
}

/// What casefold turns BWRAP into: UNIONFS, as in FlatImage (module docs).
pub const CASEFOLD_BACKEND: Backend = Backend::Unionfs;

/// All backends, in the order FlatImage declares them.
pub const ALL_BACKENDS: [Backend; 3] = [Backend::Bwrap, Backend::Overlayfs, Backend::Unionfs];

impl Backend {
    /// The name FlatImage prints (`fim-overlay show`): `BWRAP`, `OVERLAYFS`, `UNIONFS`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Backend::Bwrap => "BWRAP",
            Backend::Overlayfs => "OVERLAYFS",
            Backend::Unionfs => "UNIONFS",
        }
    }

    /// The value `FIM_OVERLAY` must have, exactly, to select this backend.
    pub const fn env_value(self) -> &'static str {
        match self {
            Backend::Bwrap => "bwrap",
            Backend::Overlayfs => "overlayfs",
            Backend::Unionfs => "unionfs",
        }
    }

    /// The overlay byte stored at reserved offset 9 for this backend.
    pub const fn mask(self) -> u8 {
        match self {
            Backend::Bwrap => 0x02,
            Backend::Overlayfs => 0x04,
            Backend::Unionfs => 0x08,
        }
    }

    /// Decodes an overlay byte. Anything but one of the three masks (a fresh
    /// image has `0x00`) is unset: `None`.
    pub const fn from_mask(byte: u8) -> Option<Backend> {
        match byte {
            0x02 => Some(Backend::Bwrap),
            0x04 => Some(Backend::Overlayfs),
            0x08 => Some(Backend::Unionfs),
            _ => None,
        }
    }

    /// Decodes a `FIM_OVERLAY` value: exact, case-sensitive match, else `None`.
    pub fn from_env_value(value: &OsStr) -> Option<Backend> {
        let bytes = value.as_encoded_bytes();
        ALL_BACKENDS
            .into_iter()
            .find(|b| bytes == b.env_value().as_bytes())
    }

    /// Parses the argument of `overlay set`: `bwrap`, `overlayfs` or
    /// `unionfs`, ASCII case-insensitive. Non-UTF-8 input is simply invalid.
    pub fn parse_setting(value: &OsStr) -> Result<Backend, ParseBackendError> {
        let bytes = value.as_encoded_bytes();
        ALL_BACKENDS
            .into_iter()
            .find(|b| bytes.eq_ignore_ascii_case(b.env_value().as_bytes()))
            .ok_or_else(|| ParseBackendError {
                value: value.to_string_lossy().into_owned(),
            })
    }

    /// True when this backend is served by the in-process fimfs daemon.
    pub const fn is_daemon(self) -> bool {
        !matches!(self, Backend::Bwrap)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = ParseBackendError;

    /// Same rule as [`Backend::parse_setting`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Backend::parse_setting(OsStr::new(s))
    }
}

/// `overlay set` got a value that names no backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseBackendError {
    /// The rejected value (lossily decoded, for the message only).
    pub value: String,
}

impl fmt::Display for ParseBackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid overlay type {:?}: expected bwrap, overlayfs or unionfs",
            self.value
        )
    }
}

impl std::error::Error for ParseBackendError {}

/// The rule that picked the requested backend (before casefold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `FIM_OVERLAY` held a valid value.
    Env(Backend),
    /// The overlay byte of the image held a valid mask.
    ImageByte(Backend),
    /// Neither: the default, BWRAP.
    Default,
}

impl Rule {
    /// The backend this rule asked for.
    pub const fn requested(self) -> Backend {
        match self {
            Rule::Env(b) | Rule::ImageByte(b) => b,
            Rule::Default => Backend::Bwrap,
        }
    }
}

/// Why [`Choice::backend`] is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    /// Which rule decided the requested backend.
    pub rule: Rule,
    /// Casefold was on and the rule asked for BWRAP, so the backend became
    /// [`CASEFOLD_BACKEND`] instead.
    pub casefold_override: bool,
    /// `FIM_OVERLAY` was set but to no valid value, and was ignored. Worth a
    /// warning: `FIM_OVERLAY=BWRAP` silently doing nothing surprises people.
    pub env_ignored: bool,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rule {
            Rule::Env(b) => write!(f, "FIM_OVERLAY={}", b.env_value())?,
            Rule::ImageByte(b) => write!(f, "overlay byte {:#04x} of the image", b.mask())?,
            Rule::Default => f.write_str("default")?,
        }
        if self.env_ignored {
            f.write_str(" (FIM_OVERLAY ignored: not exactly bwrap, overlayfs or unionfs)")?;
        }
        if self.casefold_override {
            write!(
                f,
                "; casefold is on, so {} instead of BWRAP",
                CASEFOLD_BACKEND.as_str()
            )?;
        }
        Ok(())
    }
}

/// The outcome of [`choose`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The backend to run with.
    pub backend: Backend,
    /// Which rule decided, and whether casefold overrode it.
    pub reason: Reason,
}

/// Picks the backend for one run (SPEC §5).
///
/// `env_overlay` is the raw value of `FIM_OVERLAY` (`None` when unset),
/// `overlay_byte` the byte at reserved offset 9 (`None` without an image),
/// `casefold` the combined flag from [`casefold_enabled`].
pub fn choose(env_overlay: Option<&OsStr>, overlay_byte: Option<u8>, casefold: bool) -> Choice {
    let from_env = env_overlay.and_then(Backend::from_env_value);
    let env_ignored = env_overlay.is_some() && from_env.is_none();
    let rule = match (from_env, overlay_byte.and_then(Backend::from_mask)) {
        (Some(b), _) => Rule::Env(b),
        (None, Some(b)) => Rule::ImageByte(b),
        (None, None) => Rule::Default,
    };
    let requested = rule.requested();
    let casefold_override = casefold && requested == Backend::Bwrap;
    let backend = if casefold_override {
        CASEFOLD_BACKEND
    } else {
        requested
    };
    Choice {
        backend,
        reason: Reason {
            rule,
            casefold_override,
            env_ignored,
        },
    }
}

/// Whether casefold is on: the `--casefold` flag, `FIM_CASEFOLD` equal to
/// exactly `1`, or a non-zero casefold byte (reserved offset 10).
pub fn casefold_enabled(
    flag: bool,
    env_casefold: Option<&OsStr>,
    casefold_byte: Option<u8>,
) -> bool {
    flag || env_casefold.is_some_and(|v| v.as_encoded_bytes() == b"1")
        || casefold_byte.is_some_and(|b| b != 0)
}

/// The line `overlay show` prints, as FlatImage's `fim-overlay show` does: the
/// effective backend after `FIM_OVERLAY` and casefold, upper-case.
pub fn overlay_show(
    env_overlay: Option<&OsStr>,
    overlay_byte: Option<u8>,
    casefold: bool,
) -> &'static str {
    choose(env_overlay, overlay_byte, casefold).backend.as_str()
}

#[cfg(test)]
mod tests;
