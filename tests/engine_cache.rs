//! What the kernel may cache, as the FUSE-free engine decides it (the
//! adapter only maps a `Lifetime` to the mount's durations): entries of the
//! upper briefly, lower-only entries long while the daemon is alone on its
//! upper, another spelling (casefold) never; a lower file's pages across
//! opens, an upper file's not; a directory's listing while it is unchanged.
//! No mount: milliseconds per case.

mod common;
mod engine_support;

use engine_support::*;
use fimfs::union::{Cache, Lifetime, Options};
use std::fs;

const LONG: Cache = Cache {
    attr: Lifetime::Long,
    entry: Lifetime::Long,
};
const SHORT: Cache = Cache {
    attr: Lifetime::Short,
    entry: Lifetime::Short,
};

/// One entry looked up (after `ops`) and what the kernel may cache of it.
struct Row {
    name: &'static str,
    lowers: &'static [&'static str],
    /// None: a union without an upper.
    upper: Option<&'static str>,
    casefold: bool,
    /// Another daemon shares the upper.
    shared: bool,
    ops: &'static [&'static str],
    /// Looked up as spelled here.
    path: &'static str,
    want: Cache,
}

const ROW: Row = Row {
    name: "",
    lowers: &[],
    upper: Some(""),
    casefold: false,
    shared: false,
    ops: &[],
    path: "",
    want: LONG,
};

/// Runs one row: the lookup's cache, getattr's lifetime of the attributes,
/// and (for an entry's own spelling) a readdirplus lookup's.
fn check(r: &Row, problems: &mut Vec<String>) {
    let opts = Options {
        casefold: r.casefold,
        ..Options::default()
    };
    let fx = Fixture::new("cache", r.lowers, r.upper, opts);
    let u = &fx.union;
    u.alone().set(!r.shared);
    for line in r.ops {
        let (op, want) = parse_op(line);
        if engine_apply(u, &op, true) != want {
            return problems.push(format!("{}: {line} did not give {want:?}", r.name));
        }
    }
    let mut l = Lookups::new(u);
    let (dir, name) = l.parent(r.path).expect("parent");
    let e = match u.lookup(dir, name.as_bytes()) {
        Ok(e) => e,
        Err(e) => return problems.push(format!("{}: lookup {}: {e}", r.name, r.path)),
    };
    l.hold(e.ino);
    if e.cache != r.want {
        problems.push(format!("{}: lookup gives {:?}", r.name, e.cache));
    }
    match u.getattr_entry(e.ino) {
        Ok(g) if g.cache.attr == r.want.attr => {}
        other => problems.push(format!("{}: getattr gives {other:?}", r.name)),
    }
    if r.want.entry == Lifetime::Never {
        return;
    }
    let listed = u
        .listed_dir(dir)
        .and_then(|d| u.lookup_listed(&d, name.as_bytes()));
    match listed {
        Ok(x) if x.cache == r.want => l.hold(x.ino),
        Ok(x) => {
            l.hold(x.ino);
            problems.push(format!("{}: readdirplus gives {:?}", r.name, x.cache));
        }
        Err(e) => problems.push(format!("{}: readdirplus lookup: {e}", r.name)),
    }
}

#[test]
fn entry_lifetimes() {
    let spelling = |attr| Cache {
        attr,
        entry: Lifetime::Never,
    };
    let rows = [
        Row {
            name: "a file only a lower holds: long",
            lowers: &["f a A"],
            path: "a",
            ..ROW
        },
        Row {
            name: "a directory merged across lowers only: long",
            lowers: &["f d/x X", "f d/y Y"],
            path: "d",
            ..ROW
        },
        Row {
            name: "a file deep in lower-only directories: long",
            lowers: &["f d/e/f F"],
            path: "d/e/f",
            ..ROW
        },
        Row {
            name: "a union without an upper: long",
            lowers: &["f a A"],
            upper: None,
            path: "a",
            ..ROW
        },
        Row {
            name: "a file in the upper: short",
            lowers: &["f b B"],
            upper: Some("f a A"),
            path: "a",
            want: SHORT,
            ..ROW
        },
        Row {
            name: "an upper file shadowing a lower one: short",
            lowers: &["f a L"],
            upper: Some("f a U"),
            path: "a",
            want: SHORT,
            ..ROW
        },
        Row {
            name: "a directory merged with the upper: short",
            lowers: &["f d/x X"],
            upper: Some("d d"),
            path: "d",
            want: SHORT,
            ..ROW
        },
        Row {
            name: "a lower file copied up by a write: short",
            lowers: &["f a A"],
            ops: &["write a B"],
            path: "a",
            want: SHORT,
            ..ROW
        },
        Row {
            name: "a lower file copied up by a chmod: short",
            lowers: &["f d/a A"],
            ops: &["chmod d/a 600"],
            path: "d/a",
            want: SHORT,
            ..ROW
        },
        Row {
            name: "a file made through the union: short",
            lowers: &["d d"],
            ops: &["create d/n N"],
            path: "d/n",
            want: SHORT,
            ..ROW
        },
        Row {
            name: "a lower-only file while another daemon shares the upper: short",
            lowers: &["f a A"],
            shared: true,
            path: "a",
            want: SHORT,
            ..ROW
        },
        Row {
            name: "casefold: a lower file by its own spelling: long",
            lowers: &["f ReadMe R"],
            casefold: true,
            path: "ReadMe",
            ..ROW
        },
        Row {
            name: "casefold: a lower file by another spelling: the name never kept",
            lowers: &["f ReadMe R"],
            casefold: true,
            path: "README",
            want: spelling(Lifetime::Long),
            ..ROW
        },
        Row {
            name: "casefold: an upper file by another spelling: the name never kept",
            lowers: &["d d"],
            upper: Some("f Up U"),
            casefold: true,
            path: "uP",
            want: spelling(Lifetime::Short),
            ..ROW
        },
        Row {
            name: "casefold: another spelling while shared: short attributes, no name",
            lowers: &["f ReadMe R"],
            casefold: true,
            shared: true,
            path: "readme",
            want: spelling(Lifetime::Short),
            ..ROW
        },
    ];
    let mut problems = Vec::new();
    for r in &rows {
        check(r, &mut problems);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Operations that hand the kernel a new entry give one of the upper.
#[test]
fn made_entries_are_the_uppers() {
    let fx = Fixture::new("cache-made", &["f a A\nd d"], Some(""), Options::default());
    let u = &fx.union;
    let mut l = Lookups::new(u);
    let d = l.ino("d").expect("d");
    let how = fimfs::union::Make::Dir { mode: 0o755 };
    let made = u.make(d, b"sub", how, ROOT).expect("mkdir");
    l.hold(made.ino);
    assert_eq!(made.cache, SHORT, "mkdir");
    let created = u
        .create(d, b"f", (0o644, libc::O_RDWR), ROOT)
        .expect("create");
    l.hold(created.entry.ino);
    assert_eq!(created.entry.cache, SHORT, "create");
    assert!(created.opened.upper && !created.opened.keep_cache, "create");
    let a = l.ino("a").expect("a");
    let linked = u.link(a, d, b"hard").expect("link");
    l.hold(linked.ino);
    assert_eq!(linked.cache, SHORT, "link");
    assert_eq!(
        u.getattr_entry(a).map(|e| e.cache.attr),
        Ok(Lifetime::Short)
    );
}

/// A lower file's pages stay valid across opens; an upper file's may
/// change behind the mount. A handle opened on the lower learns of a later
/// copy-up from its watch.
#[test]
fn open_files_keep_cache_only_on_a_lower() {
    let fx = Fixture::new(
        "cache-open",
        &["f low L\nf other O"],
        Some("f up U"),
        Options::default(),
    );
    let u = &fx.union;
    let mut l = Lookups::new(u);
    let (low, up, other) = (l.ino("low"), l.ino("up"), l.ino("other"));
    let (low, up, other) = (low.expect("low"), up.expect("up"), other.expect("other"));
    let o = u.open(low, libc::O_RDONLY).expect("open low");
    assert!(!o.upper && o.keep_cache, "a lower file read-only: {o:?}");
    assert!(!o.settled, "a lower file may still be copied up: {o:?}");
    assert!(!o.watch.is_upper(), "not copied up yet");
    let o2 = u.open(up, libc::O_RDONLY).expect("open up");
    assert!(o2.upper && !o2.keep_cache, "an upper file: {o2:?}");
    assert!(o2.settled, "an upper file stays where it is: {o2:?}");
    let w = u.open(low, libc::O_RDWR).expect("open low for writing");
    assert!(
        w.upper && !w.keep_cache,
        "a lower file opened to write: {w:?}"
    );
    assert!(o.watch.is_upper(), "the read-only handle sees the copy-up");
    let (op, _) = parse_op("chmod other 600");
    engine_apply(u, &op, true).expect("chmod");
    let o3 = u.open(other, libc::O_RDONLY).expect("open other");
    assert!(
        o3.upper && !o3.keep_cache,
        "a file copied up by chmod: {o3:?}"
    );
}

/// Without an upper nothing is ever copied up: every open file is settled
/// (the kernel may be handed the file itself).
#[test]
fn every_file_of_a_union_without_an_upper_is_settled() {
    let fx = Fixture::new(
        "cache-ro",
        &["f top T", "f low L"],
        None,
        Options::default(),
    );
    let u = &fx.union;
    let mut l = Lookups::new(u);
    for name in ["top", "low"] {
        let ino = l.ino(name).expect(name);
        let o = u.open(ino, libc::O_RDONLY).expect(name);
        assert!(!o.upper && o.settled, "{name}: {o:?}");
    }
}

/// The kernel keeps a directory's cached listing only while the directory
/// is as its last listing found it: a change behind the mount, in the
/// upper, makes the next opendir drop it.
#[test]
fn opendir_keeps_the_listing_while_unchanged() {
    let fx = Fixture::new(
        "cache-dir",
        &["f merged/x X\nf low/y Y"],
        Some("d merged"),
        Options::default(),
    );
    let u = &fx.union;
    let mut l = Lookups::new(u);
    for (dir, behind) in [("merged", "merged/new"), ("low", "low/new")] {
        let ino = l.ino(dir).expect(dir);
        let keep = |why: &str| {
            let d = u
                .opendir(ino)
                .unwrap_or_else(|e| panic!("opendir {dir}: {e}"));
            assert_eq!(d.attr, u.getattr(ino).expect("getattr"), "{dir}: {why}");
            d.keep_listing
        };
        assert!(!keep("never listed"), "{dir}: never listed, yet kept");
        u.snapshot(ino, None).expect("snapshot");
        assert!(keep("listed"), "{dir}: listed and unchanged, yet dropped");
        assert!(keep("opened again"), "{dir}: opened twice, dropped");
        fs::create_dir_all(fx.upper().join(dir)).expect("upper dir");
        fs::write(fx.upper().join(behind), "N").expect("write behind");
        assert!(
            !keep("changed behind"),
            "{dir}: changed behind the mount, yet kept"
        );
        u.snapshot(ino, None).expect("snapshot");
        assert!(keep("listed again"), "{dir}: listed again, yet dropped");
    }
}
