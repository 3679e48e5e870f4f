use super::*;

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

#[test]
fn mount_forms() {
    let r = mount_request(
        &os(&["/a:/b", "/u", "/m"]),
        &os(&["workdir=/w,threads=3"]),
        true,
    )
    .unwrap();
    assert_eq!(r.lowers, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
    assert_eq!(r.upper, Some(PathBuf::from("/u")));
    assert_eq!(r.mountpoint, PathBuf::from("/m"));
    assert_eq!(r.opts.workdir, Some(PathBuf::from("/w")));
    assert_eq!(r.opts.threads, Some(3));
    assert!(r.foreground);

    let ro = mount_request(&os(&["/a", "/m"]), &[], false).unwrap();
    assert_eq!(ro.upper, None);

    let fo = fuse_overlayfs_request(&os(&[
        "-f",
        "-o",
        "squash_to_uid=1000",
        "-o",
        "squash_to_gid=100,lowerdir=/t:/b,upperdir=/u,workdir=/w",
        "/m",
    ]))
    .unwrap();
    assert_eq!(fo.lowers, vec![PathBuf::from("/t"), PathBuf::from("/b")]);
    assert_eq!(
        (fo.opts.squash_uid, fo.opts.squash_gid),
        (Some(1000), Some(100))
    );
    assert_eq!(fo.upper, Some(PathBuf::from("/u")));
    assert!(fo.foreground);

    let un = unionfs_request(&os(&["-f", "-o", "cow", "/u=RW:/t=RO:/b=RO", "/m"])).unwrap();
    assert_eq!(un.upper, Some(PathBuf::from("/u")));
    assert_eq!(un.lowers, vec![PathBuf::from("/t"), PathBuf::from("/b")]);
}

#[test]
fn bad_input_is_named() {
    let cases: &[(&[&str], &[&str], &str)] = &[
        (&["/a", "/m"], &["bogus"], "unknown option: bogus"),
        (&["/a", "/m"], &["threads=x"], "threads"),
        (&["/a", "/m"], &["threads=0"], "out of range"),
        (&["/a", "/m"], &["squash_to_uid=-1"], "squash_to_uid"),
        (&["/a", "/m"], &["workdir"], "needs a value"),
        (&["/a::/b", "/m"], &[], "empty entry"),
        (&["/m"], &[], "missing"),
        (&["/a", "/u", "/m", "/x"], &[], "too many"),
        (&["/a", "/m"], &["lowerdir=/b"], "twice"),
    ];
    for (pos, opts, want) in cases {
        let e = mount_request(&os(pos), &os(opts), false).unwrap_err();
        assert!(e.0.contains(want), "{pos:?} {opts:?}: {e}");
    }
    assert!(unionfs_request(&os(&["/t=RO:/u=RW", "/m"])).is_err());
    assert!(unionfs_request(&os(&["/t=XX", "/m"])).is_err());
    assert!(fuse_overlayfs_request(&os(&["-z", "/m"])).is_err());
}

#[test]
fn no_ops_are_accepted() {
    let mut o = MountOpts::default();
    o.apply(OsStr::new("rw,noatime,fsync=0,redirect_dir=off,cow,,nodev"))
        .unwrap();
    assert_eq!(o, MountOpts::default());
}

/// A seeded generator throws random option strings at the parser: it
/// must answer Ok or a message, never panic.
#[test]
fn fuzz_option_parser() {
    let alphabet: &[u8] = b"abcdefghijklmnopqrstuvwxyz_=,:/0123456789-. \xff";
    let words: &[&[u8]] = &[
        b"workdir=",
        b"threads=",
        b"lowerdir=",
        b"upperdir=",
        b"squash_to_uid=",
        b"timeout=",
        b"ro",
        b"allow_other",
        b",",
        b":",
        b"=",
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..20_000 {
        let mut s = Vec::new();
        for _ in 0..(next() % 12) {
            if next() % 3 == 0 {
                s.extend_from_slice(words[(next() % words.len() as u64) as usize]);
            } else {
                s.push(alphabet[(next() % alphabet.len() as u64) as usize]);
            }
        }
        let arg = OsString::from_vec(s);
        let mut o = MountOpts::default();
        let _ = o.apply(&arg);
        let _ = split_lowers(&arg);
        let _ = unionfs_branches(&arg);
        let _ = mount_request(
            &[arg.clone(), OsString::from("/m")],
            std::slice::from_ref(&arg),
            false,
        );
    }
}

/// Every option of the table is accepted with a value of its kind and
/// changes the request; every ignored one changes nothing.
#[test]
fn every_table_option_is_parsed() {
    for s in table::OPTIONS {
        let opt = match s.value {
            None => s.name.to_string(),
            Some(v) if v.contains(':') => format!("{}=/a:/b", s.name),
            Some("DIR") => format!("{}=/d", s.name),
            Some(_) => format!("{}=3", s.name),
        };
        let mut o = MountOpts::default();
        o.apply(OsStr::new(&opt))
            .unwrap_or_else(|e| panic!("{opt}: {e}"));
        assert_ne!(o, MountOpts::default(), "{opt} has no effect");
        assert!(table::help().contains(s.name), "{opt} not in help");
    }
    for name in table::IGNORED {
        let mut o = MountOpts::default();
        o.apply(OsStr::new(name)).unwrap();
        assert_eq!(o, MountOpts::default(), "{name}");
    }
    for key in table::IGNORED_KEYS {
        let mut o = MountOpts::default();
        o.apply(OsStr::new(&format!("{key}=x"))).unwrap();
        assert_eq!(o, MountOpts::default(), "{key}");
    }
    let mut o = MountOpts::default();
    o.apply(OsStr::new("x-systemd.automount,x-gvfs-show,noauto,nofail"))
        .unwrap();
    assert_eq!(o, MountOpts::default());
}

/// `mount.fuse3` runs `PROG SOURCE MNT -o OPTS`; fuse-overlayfs ignores
/// SOURCE when `lowerdir=` is given, and so does fimfs.
#[test]
fn source_forms() {
    let fo = fuse_overlayfs_request(&os(&[
        "none",
        "/m",
        "-o",
        "rw,lowerdir=/t:/b,upperdir=/u,workdir=/w",
    ]))
    .unwrap();
    assert_eq!(fo.lowers, vec![PathBuf::from("/t"), PathBuf::from("/b")]);
    assert_eq!(
        (fo.upper, fo.mountpoint),
        (Some(PathBuf::from("/u")), PathBuf::from("/m"))
    );
    let labelled = source_form_request(&os(&["fimfs-demo", "/m", "-o", "lowerdir=/l"]));
    assert_eq!(labelled.unwrap().unwrap().lowers, vec![PathBuf::from("/l")]);
    let lowers = source_form_request(&os(&["/a:/b", "/m", "-o", "upperdir=/u,noauto"]))
        .unwrap()
        .unwrap();
    assert_eq!(
        lowers.lowers,
        vec![PathBuf::from("/a"), PathBuf::from("/b")]
    );
    assert_eq!(lowers.upper, Some(PathBuf::from("/u")));
    // Not this form: clap's message about an unknown subcommand stays.
    assert!(source_form_request(&os(&["moutn", "x"])).is_none());
    assert!(source_form_request(&os(&["/a", "/b", "/c", "/d"])).is_none());
    assert!(source_form_request(&os(&["--help"])).is_none());
    // `fimfs mount` itself keeps refusing lowers given twice.
    let e = mount_request(&os(&["/a", "/m"]), &os(&["lowerdir=/b"]), false).unwrap_err();
    assert!(e.0.contains("twice"), "{e}");
}

#[test]
fn sizes_take_suffixes_and_refuse_junk() {
    assert_eq!(parse_size("cache_size", b"512m").unwrap(), 512 << 20);
    assert_eq!(parse_size("cache_size", b"2G").unwrap(), 2 << 30);
    assert_eq!(parse_size("offset", b"4096").unwrap(), 4096);
    for bad in [&b""[..], b"m", b"12x", b"-1", b"1.5g", b"99999999999t"] {
        let e = parse_size("cache_size", bad).unwrap_err();
        assert!(
            e.0.contains("cache_size") && e.0.contains("not a size"),
            "{e}"
        );
    }
}

#[test]
fn dwarfs_form_is_one_read_only_image() {
    let args: Vec<OsString> = [
        "/a/app:x.flatimage",
        "/mnt/l",
        "-f",
        "-o",
        "uid=1000,gid=1001,auto_unmount,offset=4198400,imagesize=1234,cachesize=64m,workers=2",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let r = dwarfs_request(&args).unwrap();
    assert_eq!(r.lowers, vec![PathBuf::from("/a/app:x.flatimage")]);
    assert_eq!((r.upper, r.foreground), (None, true));
    let o = &r.opts;
    assert_eq!((o.squash_uid, o.squash_gid), (Some(1000), Some(1001)));
    assert_eq!((o.image_offset, o.image_size), (Some(4198400), Some(1234)));
    assert_eq!((o.cache_size, o.auto_unmount), (Some(64 << 20), true));
    let auto = dwarfs_request(&[
        OsString::from("i"),
        OsString::from("m"),
        OsString::from("-ooffset=auto"),
    ])
    .unwrap();
    assert_eq!(auto.opts.image_offset, None);
    let e = dwarfs_request(&[OsString::from("i")]).unwrap_err();
    assert!(e.0.contains("IMAGE MOUNTPOINT"), "{e}");
}
