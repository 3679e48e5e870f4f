//! The daemon never dies of a request:
//! - a panic inside a handler (fault injection: `FIMFS_FAULT_PANIC_ON_LOOKUP`)
//!   costs that request an EIO and a log line, and the daemon keeps serving;
//! - seeded random values in every marker xattr the daemon decodes (overlay
//!   whiteout/opaque/origin marks, fimfs' origin mark), in lowers and the
//!   upper, never make a request fail with EIO or stop the daemon;
//! - a lower directory removed while mounted: the daemon keeps serving what
//!   is left and exits cleanly.
//!
//! Knob: `FIMFS_MARKER_FUZZ` (rounds, default 40), `FIMFS_MARKER_SEED`.

mod common;

use common::*;
use std::fs;
use std::path::Path;

const PANIC_NAME: &str = "fimfs-fault-panic";

#[test]
fn a_panicking_handler_costs_one_request_not_the_daemon() {
    // SAFETY: set before any daemon is spawned; the tests of this binary
    // only read it through the daemons they start.
    unsafe { std::env::set_var("FIMFS_FAULT_PANIC_ON_LOOKUP", PANIC_NAME) };
    let s = Stack::new("panic", 1);
    put(&s.l(1, "file"), "still served\n");
    let m = s.mount();
    for round in 0..50 {
        let e = fs::symlink_metadata(s.m(PANIC_NAME)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "round {round}");
        assert_eq!(read_str(&s.m("file")), "still served\n", "round {round}");
    }
    put(&s.m("after"), "written after the panics\n");
    assert_eq!(read_str(&s.m("after")), "written after the panics\n");
    let log = m.stderr();
    assert!(log.contains("handler panicked"), "no log line:\n{log}");
    unmount_clean(m);
}

/// Values a decoder must survive: empty, short, long, the right length with
/// garbage, valid ones, NULs.
fn garbage(r: &mut XorShift) -> Vec<u8> {
    match r.below(6) {
        0 => Vec::new(),
        1 => b"y".to_vec(),
        2 => b"x".to_vec(),
        3 => fill(r.next_u64(), 16),
        4 => fill(r.next_u64(), r.below(300)),
        _ => vec![0u8; r.below(40)],
    }
}

const MARKERS: [&str; 9] = [
    "user.overlay.whiteout",
    "user.overlay.opaque",
    "user.overlay.origin",
    "user.overlay.redirect",
    "user.overlay.metacopy",
    "user.fuseoverlayfs.opaque",
    "user.fimfs.origin",
    "trusted.overlay.opaque",
    "trusted.fimfs.origin",
];

fn walk_all(dir: &Path, ctx: &str) -> usize {
    let mut n = 0;
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            assert_ne!(
                e.raw_os_error(),
                Some(libc::EIO),
                "{ctx}: readdir {}",
                dir.display()
            );
            return 0;
        }
    };
    for e in rd {
        let e = e.unwrap_or_else(|err| panic!("{ctx}: readdir entry: {err}"));
        let p = e.path();
        n += 1;
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => n += walk_all(&p, ctx),
            Ok(m) if m.is_file() => {
                if let Err(err) = fs::read(&p) {
                    assert_ne!(
                        err.raw_os_error(),
                        Some(libc::EIO),
                        "{ctx}: read {}",
                        p.display()
                    );
                }
            }
            Ok(_) => {}
            Err(err) => {
                assert_ne!(
                    err.raw_os_error(),
                    Some(libc::EIO),
                    "{ctx}: lstat {}",
                    p.display()
                )
            }
        }
    }
    n
}

#[test]
fn random_marker_values_never_break_the_daemon() {
    let rounds = knob("FIMFS_MARKER_FUZZ", 40);
    let seed = knob("FIMFS_MARKER_SEED", 0xfa22);
    let mut r = XorShift::new(seed);
    let mut values = 0u64;
    for round in 0..rounds {
        let ctx = format!("FIMFS_MARKER_SEED={seed} round {round}");
        let s = Stack::new("marker-fuzz", 2);
        for layer in [s.l(1, ""), s.l(2, ""), s.u("")] {
            for i in 0..6 {
                let d = layer.join(format!("d{i}"));
                put(&d.join("f"), "f\n");
                put(&layer.join(format!("f{i}")), "");
                put(&layer.join(format!("g{i}")), "g\n");
                for p in [d, layer.join(format!("f{i}")), layer.join(format!("g{i}"))] {
                    for _ in 0..2 {
                        let name = *r.pick(&MARKERS);
                        let _ = set_xattr(&p, name, &garbage(&mut r));
                        values += 1;
                    }
                }
            }
        }
        let m = s.mount();
        let seen = walk_all(&s.mnt, &ctx);
        // Writes over the odd entries: copy-up reads the marks too.
        for i in 0..6 {
            let _ = fs::write(s.m(&format!("g{i}")), "new\n");
            let _ = fs::remove_file(s.m(&format!("f{i}")));
            let _ = fs::rename(s.m(&format!("d{i}")), s.m(&format!("moved{i}")));
        }
        walk_all(&s.mnt, &ctx);
        assert!(seen > 0, "{ctx}: nothing listed");
        unmount_clean(m);
    }
    eprintln!("marker fuzz: {rounds} mounts, {values} random marker values");
}

#[test]
fn a_lower_removed_while_mounted() {
    let s = Stack::new("vanishing-lower", 2);
    put(&s.l(1, "top"), "top\n");
    put(&s.l(2, "bottom"), "bottom\n");
    put(&s.l(2, "dir/inner"), "inner\n");
    let m = s.mount();
    assert_eq!(names(&s.mnt), ["bottom", "dir", "top"]);
    fs::remove_dir_all(&s.lowers[1]).unwrap();
    // What the vanished lower held is gone or still readable (cached); no
    // request fails with EIO, and the rest keeps working.
    for p in ["bottom", "dir/inner", "dir"] {
        if let Err(e) = fs::symlink_metadata(s.m(p)) {
            assert_ne!(e.raw_os_error(), Some(libc::EIO), "{p}");
        }
    }
    assert_eq!(read_str(&s.m("top")), "top\n");
    let _ = names(&s.mnt);
    put(&s.m("new"), "new\n");
    assert_eq!(read_str(&s.m("new")), "new\n");
    unmount_clean(m);
}
