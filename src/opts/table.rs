//! The one list of `-o` options: the parser accepts exactly these names
//! (plus the ignored ones below), and `fimfs mount --help` and the man page
//! print them from here, so the two cannot drift apart.

/// One option that changes what the mount does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptSpec {
    pub name: &'static str,
    /// What follows `name=` (`DIR`, `N`, `S`…), or `None` for a flag.
    pub value: Option<&'static str>,
    pub meaning: &'static str,
}

const fn flag(name: &'static str, meaning: &'static str) -> OptSpec {
    OptSpec {
        name,
        value: None,
        meaning,
    }
}

const fn valued(name: &'static str, value: &'static str, meaning: &'static str) -> OptSpec {
    OptSpec {
        name,
        value: Some(value),
        meaning,
    }
}

/// Every option with an effect, in the order `--help` shows them.
pub const OPTIONS: &[OptSpec] = &[
    valued(
        "lowerdir",
        "TOP:...:BOTTOM",
        "the lower directories (fuse-overlayfs spelling of LOWERS)",
    ),
    valued(
        "upperdir",
        "DIR",
        "the upper directory (fuse-overlayfs spelling of UPPER)",
    ),
    valued(
        "workdir",
        "DIR",
        "staging area on the upper's filesystem (default <parent of UPPER>/work/<PID>)",
    ),
    valued(
        "threads",
        "N",
        "FUSE event loops, each with its own /dev/fuse fd (default: the CPU count)",
    ),
    flag(
        "allow_other",
        "let every user use the mount (on for a root mount)",
    ),
    flag("allow_root", "the same as allow_other"),
    flag(
        "default_permissions",
        "let the kernel check permissions (on for a root mount)",
    ),
    flag("ro", "read-only, even with an upper"),
    flag("nonempty", "allow a non-empty mountpoint"),
    valued(
        "timeout",
        "S",
        "kernel cache lifetime, in seconds, of what the upper holds and of missing names (default 1)",
    ),
    valued(
        "lower_timeout",
        "S",
        "kernel cache lifetime, in seconds, of what only the lowers hold (default 60)",
    ),
    valued(
        "squash_to_uid",
        "N",
        "report every file as owned by user N; chown succeeds without effect",
    ),
    valued(
        "squash_to_gid",
        "N",
        "report every file as owned by group N; chown succeeds without effect",
    ),
    flag(
        "casefold",
        "case-insensitive, case-preserving names across all layers",
    ),
    flag(
        "nopassthrough",
        "never open upper files in FUSE passthrough mode",
    ),
    flag(
        "handles",
        "the kernel asks the daemon at every open and close (a handle per open; passthrough for upper files too)",
    ),
    flag(
        "nohandles",
        "the kernel opens files without asking the daemon, also where passthrough could serve them",
    ),
    valued(
        "cache_size",
        "SIZE",
        "bytes of decoded image blocks kept for all image lowers (k/m/g suffixes; default 512m)",
    ),
    valued(
        "offset",
        "N",
        "where the one image lower starts in its file (dwarfs' offset=; auto: look for it)",
    ),
    valued(
        "imagesize",
        "N",
        "how many bytes of its file the one image lower spans (dwarfs' imagesize=)",
    ),
    flag(
        "auto_unmount",
        "unmount when the daemon ends, also when it is killed",
    ),
    valued("uid", "N", "the same as squash_to_uid (dwarfs' spelling)"),
    valued("gid", "N", "the same as squash_to_gid (dwarfs' spelling)"),
    valued(
        "cachesize",
        "SIZE",
        "the same as cache_size (dwarfs' spelling)",
    ),
    flag(
        "case_insensitive",
        "the same as casefold (dwarfs' spelling)",
    ),
    flag("debug", "debug logging"),
];

/// Accepted and ignored: mount flags the kernel or FUSE handle, the
/// options fuse-overlayfs, unionfs-fuse and the kernel overlay document as
/// having no effect on the result, and what fstab and `mount` add.
pub const IGNORED: &[&str] = &[
    "rw",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "strictatime",
    "nodiratime",
    "async",
    "noacl",
    "static_nlink",
    "userxattr",
    "cow",
    "use_ino",
    "hide_meta_files",
    "statfs_omit_ro",
    "relaxed_permissions",
    "auto_cache",
    "kernel_cache",
    "big_writes",
    "splice_read",
    "splice_write",
    "splice_move",
    // fstab's own words; mount(8) and mount.fuse3 drop most of them, but a
    // hand-written command line may carry them.
    "defaults",
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    // dwarfs' flags without an effect here: fimfs serves images read-only,
    // keeps the image file open and counts hard links always.
    "readonly",
    "enable_nlink",
    "cache_image",
    "no_cache_image",
    "cache_files",
    "no_cache_files",
    "preload_all",
];

/// `name=value` options ignored whatever their value.
pub const IGNORED_KEYS: &[&str] = &[
    "fsync",
    "redirect_dir",
    "index",
    "metacopy",
    "xino",
    "max_files",
    "fsname",
    "subtype",
    "xattr_permissions",
    "plugins",
    "uidmapping",
    "gidmapping",
    "comment",
    // dwarfs' tuning knobs, which fimfs's reader sets itself.
    "workers",
    "blocksize",
    "readahead",
    "mlock",
    "decratio",
    "tidy_strategy",
    "tidy_interval",
    "tidy_max_age",
    "seq_detector",
    "block_allocator",
    "debuglevel",
    "perfmon",
    "perfmon_trace",
    "analysis_file",
    "preload_category",
];

/// Options starting with this are comments for userspace tools (fstab's
/// `x-systemd.*` and the like), ignored with or without a value.
pub const IGNORED_PREFIX: &str = "x-";

/// The option's spec, if `name` is one with an effect.
pub fn spec(name: &str) -> Option<&'static OptSpec> {
    OPTIONS.iter().find(|s| s.name == name)
}

/// Whether `name` (with or without a value) is accepted and ignored.
pub fn ignored(name: &str, has_value: bool) -> bool {
    name.starts_with(IGNORED_PREFIX)
        || match has_value {
            false => IGNORED.contains(&name),
            true => IGNORED_KEYS.contains(&name),
        }
}

/// The option list as `fimfs mount --help` and the man page print it.
pub fn help() -> String {
    let shown = |s: &OptSpec| match s.value {
        Some(v) => format!("{}={v}", s.name),
        None => s.name.to_string(),
    };
    let width = OPTIONS.iter().map(|s| shown(s).len()).max().unwrap_or(0);
    let mut out = String::from("Mount options (-o OPT[,OPT...], or -o repeated):\n");
    for s in OPTIONS {
        out.push_str(&format!("  {:width$}  {}\n", shown(s), s.meaning));
    }
    out.push_str("\nAccepted and ignored: ");
    let mut ignored: Vec<String> = IGNORED.iter().map(|s| s.to_string()).collect();
    ignored.extend(IGNORED_KEYS.iter().map(|k| format!("{k}=...")));
    ignored.push(format!("{IGNORED_PREFIX}*"));
    out.push_str(&ignored.join(", "));
    out.push_str(".\nAny other option is refused.");
    out
}
