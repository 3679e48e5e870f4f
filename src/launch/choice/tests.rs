//! The whole choice matrix: `FIM_OVERLAY` value × overlay byte × casefold.

use super::*;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use Backend::{Bwrap, Overlayfs, Unionfs};

fn os(s: &str) -> OsString {
    OsString::from(s)
}

type Row = (
    Option<&'static str>,
    Option<u8>,
    bool,
    Backend,
    Rule,
    bool,
    bool,
);

/// Explicit rows: (FIM_OVERLAY, byte, casefold) → (backend, rule, casefold_override, env_ignored).
#[rustfmt::skip]
const ROWS: &[Row] = &[
    // Nothing set: default BWRAP, casefold turns it into the daemon.
    (None, None, false, Bwrap, Rule::Default, false, false),
    (None, None, true, Unionfs, Rule::Default, true, false),
    (None, Some(0x00), false, Bwrap, Rule::Default, false, false),
    (None, Some(0x00), true, Unionfs, Rule::Default, true, false),
    // The image byte.
    (None, Some(0x02), false, Bwrap, Rule::ImageByte(Bwrap), false, false),
    (None, Some(0x02), true, Unionfs, Rule::ImageByte(Bwrap), true, false),
    (None, Some(0x04), false, Overlayfs, Rule::ImageByte(Overlayfs), false, false),
    (None, Some(0x04), true, Overlayfs, Rule::ImageByte(Overlayfs), false, false),
    (None, Some(0x08), false, Unionfs, Rule::ImageByte(Unionfs), false, false),
    (None, Some(0x08), true, Unionfs, Rule::ImageByte(Unionfs), false, false),
    // Invalid bytes count as unset.
    (None, Some(0x06), false, Bwrap, Rule::Default, false, false),
    (None, Some(0x01), false, Bwrap, Rule::Default, false, false),
    (None, Some(0xff), true, Unionfs, Rule::Default, true, false),
    // FIM_OVERLAY beats the byte.
    (Some("unionfs"), Some(0x04), false, Unionfs, Rule::Env(Unionfs), false, false),
    (Some("overlayfs"), Some(0x08), false, Overlayfs, Rule::Env(Overlayfs), false, false),
    (Some("bwrap"), Some(0x08), false, Bwrap, Rule::Env(Bwrap), false, false),
    (Some("bwrap"), Some(0x08), true, Unionfs, Rule::Env(Bwrap), true, false),
    (Some("unionfs"), None, true, Unionfs, Rule::Env(Unionfs), false, false),
    // Invalid FIM_OVERLAY values are ignored, and flagged.
    (Some(""), Some(0x08), false, Unionfs, Rule::ImageByte(Unionfs), false, true),
    (Some("BWRAP"), Some(0x04), false, Overlayfs, Rule::ImageByte(Overlayfs), false, true),
    (Some("Unionfs"), None, false, Bwrap, Rule::Default, false, true),
    (Some(" bwrap"), None, true, Unionfs, Rule::Default, true, true),
    (Some("unionfs\n"), None, false, Bwrap, Rule::Default, false, true),
];

#[test]
fn choice_table() {
    for &(env, byte, casefold, backend, rule, over, ignored) in ROWS {
        let env = env.map(os);
        let got = choose(env.as_deref(), byte, casefold);
        let want = Choice {
            backend,
            reason: Reason {
                rule,
                casefold_override: over,
                env_ignored: ignored,
            },
        };
        assert_eq!(got, want, "env={env:?} byte={byte:?} casefold={casefold}");
    }
}

/// An independent oracle, checked over the full cross product.
fn oracle(env: Option<&[u8]>, byte: Option<u8>, casefold: bool) -> Backend {
    let requested = match env {
        Some(b"bwrap") => Bwrap,
        Some(b"overlayfs") => Overlayfs,
        Some(b"unionfs") => Unionfs,
        _ => match byte {
            Some(2) => Bwrap,
            Some(4) => Overlayfs,
            Some(8) => Unionfs,
            _ => Bwrap,
        },
    };
    if casefold && requested == Bwrap {
        Unionfs
    } else {
        requested
    }
}

#[test]
fn choice_matrix_matches_oracle() {
    let envs: Vec<Option<Vec<u8>>> = [
        None,
        Some(&b"bwrap"[..]),
        Some(b"overlayfs"),
        Some(b"unionfs"),
        Some(b""),
        Some(b"BWRAP"),
        Some(b"OverlayFS"),
        Some(b"fuse-overlayfs"),
        Some(b"unionfs "),
        Some(b"\xffbwrap"),
        Some(b"bwrap\0"),
    ]
    .into_iter()
    .map(|e| e.map(<[u8]>::to_vec))
    .collect();
    let mut bytes: Vec<Option<u8>> = vec![None];
    bytes.extend((0..=255u8).map(Some));
    for env in &envs {
        let env_os = env.clone().map(OsString::from_vec);
        for &byte in &bytes {
            for casefold in [false, true] {
                let got = choose(env_os.as_deref(), byte, casefold);
                let want = oracle(env.as_deref(), byte, casefold);
                assert_eq!(got.backend, want, "env={env:?} byte={byte:?} cf={casefold}");
                assert!(
                    !(casefold && got.backend == Bwrap),
                    "casefold never uses BWRAP"
                );
                assert_eq!(
                    overlay_show(env_os.as_deref(), byte, casefold),
                    want.as_str()
                );
                let valid = env
                    .as_deref()
                    .is_some_and(|e| Backend::from_env_value(OsStr::from_bytes(e)).is_some());
                assert_eq!(got.reason.env_ignored, env.is_some() && !valid);
            }
        }
    }
}

#[test]
fn casefold_sources() {
    let rows: &[(bool, Option<&str>, Option<u8>, bool)] = &[
        (false, None, None, false),
        (true, None, None, true),
        (false, Some("1"), None, true),
        (false, Some("0"), None, false),
        (false, Some(""), None, false),
        (false, Some("true"), None, false),
        (false, Some("1 "), None, false),
        (false, Some("01"), None, false),
        (false, None, Some(0), false),
        (false, None, Some(1), true),
        (false, None, Some(0x80), true),
        (true, Some("0"), Some(0), true),
    ];
    for &(flag, env, byte, want) in rows {
        let env = env.map(os);
        assert_eq!(
            casefold_enabled(flag, env.as_deref(), byte),
            want,
            "{flag} {env:?} {byte:?}"
        );
    }
}

#[test]
fn names_masks_and_parsing() {
    for b in ALL_BACKENDS {
        assert_eq!(Backend::from_mask(b.mask()), Some(b));
        assert_eq!(Backend::from_env_value(OsStr::new(b.env_value())), Some(b));
        assert_eq!(b.to_string(), b.as_str());
        assert_eq!(b.is_daemon(), b != Bwrap);
    }
    assert_eq!(Bwrap.as_str(), "BWRAP");
    assert_eq!(Overlayfs.as_str(), "OVERLAYFS");
    assert_eq!(Unionfs.as_str(), "UNIONFS");
    for (text, want) in [
        ("bwrap", Bwrap),
        ("BWRAP", Bwrap),
        ("OverlayFS", Overlayfs),
        ("overlayfs", Overlayfs),
        ("UnionFS", Unionfs),
    ] {
        assert_eq!(text.parse::<Backend>(), Ok(want), "{text}");
        assert_eq!(Backend::parse_setting(OsStr::new(text)), Ok(want), "{text}");
    }
    for bad in ["", "bwrap ", "fuse", "overlay", "union"] {
        let err = bad.parse::<Backend>().unwrap_err();
        assert!(
            err.to_string().contains("bwrap, overlayfs or unionfs"),
            "{err}"
        );
    }
    let bad = OsString::from_vec(b"\xffbwrap".to_vec());
    assert!(Backend::parse_setting(&bad).is_err());
}

#[test]
fn reason_messages() {
    let c = choose(Some(OsStr::new("bwrap")), None, true);
    let msg = c.reason.to_string();
    assert!(
        msg.contains("FIM_OVERLAY=bwrap") && msg.contains("casefold"),
        "{msg}"
    );
    let c = choose(Some(OsStr::new("Bwrap")), Some(0x08), false);
    let msg = c.reason.to_string();
    assert!(msg.contains("0x08") && msg.contains("ignored"), "{msg}");
    assert_eq!(choose(None, None, false).reason.to_string(), "default");
}
