//! The union benchmark's workload catalogue: the sides (the kernel
//! overlay, fimfs, the baseline fimfs, the peers), the lower sets, and one
//! [`Spec`] per row of the performance table, turned into the timed shell
//! command, its check and the expected output once the trees exist
//! ([`Bench::workloads`]).
use std::ops::Deref;

use crate::{Bench, CRD_COUNT, Config, HELPER, TOUCH_COUNT, WIDE_ENTRIES};
use crate::{debroot, fixtures, tree};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Side {
    Kernel,
    Fimfs,
    /// `FIMFS_BENCH_BASELINE`: an older fimfs binary, mounted like fimfs.
    Baseline,
    FuseOverlayfs,
    UnionfsFuse,
}

impl Side {
    /// The sides criterion measures (the baseline too, when given).
    pub fn criterion(baseline: bool) -> Vec<Side> {
        let all = [Side::Kernel, Side::Fimfs, Side::Baseline];
        all[..if baseline { 3 } else { 2 }].to_vec()
    }
    /// The sides only the peers mode measures, with a plain loop.
    pub const PEERS: [Side; 2] = [Side::FuseOverlayfs, Side::UnionfsFuse];

    pub fn name(self) -> &'static str {
        match self {
            Side::Kernel => "kernel",
            Side::Fimfs => "fimfs",
            Side::Baseline => "fimfs-baseline",
            Side::FuseOverlayfs => "fuse-overlayfs",
            Side::UnionfsFuse => "unionfs-fuse",
        }
    }
}

/// The lower sets; each daemon side mounts each one separately.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Union {
    /// The 5-lower tree.
    Main,
    /// The root filesystem (2 lowers), used as `/`.
    Root,
    /// The 50,000-entry directory (2 lowers).
    Wide,
    /// 20 lowers, files only in the bottom one.
    Deep,
    /// One lower: a debootstrap minbase root ([`crate::debroot`]).
    Debroot,
}

impl Union {
    pub fn name(self) -> &'static str {
        match self {
            Union::Main => "main",
            Union::Root => "root",
            Union::Wide => "wide",
            Union::Deep => "deep",
            Union::Debroot => "debroot",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Read-only mount, caches kept warm between iterations.
    Warm,
    /// Read-only mount, `drop_caches` (and a fresh daemon mount) before each
    /// iteration.
    Cold,
    /// Read-write mount over a fresh, empty upper for each iteration.
    Write,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Id {
    TouchRoot,
    Touch,
    Crd,
    UntarGrep,
    FindWarm,
    LsWarm,
    FindCold,
    LsCold,
    Read,
    Readdir,
    StatDeep,
    FindDeepWarm,
    FindDeepCold,
    LsDeepCold,
    AppendSmall,
    AppendBig,
    SeqWrite,
    DpkgInstall,
    TouchMinbase,
}

/// What a workload is, independent of the generated trees.
pub struct Spec {
    pub id: Id,
    /// Criterion group name, also the report's workload name.
    pub group: String,
    /// The row of the table this measures.
    pub row: String,
    /// The target for fimfs / kernel (None: not in the table).
    pub target: Option<f64>,
    pub union: Union,
    pub kind: Kind,
    /// The union is the command's `/` (needs `Kind::Write`).
    pub as_root: bool,
    /// Also record the daemon's CPU time per iteration.
    pub cpu: bool,
    /// Also count fimfs' requests for one untimed run (`FIMFS_STATS`),
    /// reported per [`Spec::units`].
    pub stats: bool,
    /// What the request counts are divided by: (count, unit name).
    pub units: Option<(usize, &'static str)>,
}

/// The workloads, in the order of the table.
pub fn specs(cfg: &Config) -> Vec<Spec> {
    let big = cfg.big_mib;
    let wmib = cfg.write_mib;
    let wide_k = WIDE_ENTRIES / 1000;
    let deep = fixtures::DEEP_LOWERS;
    let s = |id, group: String, row: String, target, union, kind| Spec {
        id,
        group,
        row,
        target,
        union,
        kind,
        as_root: matches!(id, Id::TouchRoot | Id::TouchMinbase),
        cpu: id == Id::UntarGrep,
        stats: matches!(id, Id::DpkgInstall | Id::TouchMinbase),
        units: match id {
            Id::DpkgInstall => Some((debroot::PACKAGES.len(), "package")),
            Id::TouchMinbase => Some((TOUCH_COUNT, "program start")),
            _ => None,
        },
    };
    use Kind::*;
    use Union::*;
    vec![
        s(
            Id::TouchRoot,
            format!("writes_touch_{TOUCH_COUNT}_as_root"),
            format!("{TOUCH_COUNT} × `touch` of new files, union as `/`"),
            Some(1.2),
            Root,
            Write,
        ),
        s(
            Id::Touch,
            format!("writes_create_{TOUCH_COUNT}"),
            format!("{TOUCH_COUNT} × `touch` of new files in a union directory"),
            None,
            Main,
            Write,
        ),
        s(
            Id::Crd,
            format!("writes_create_rename_delete_{CRD_COUNT}"),
            format!("create, rename, delete {CRD_COUNT} files"),
            Some(1.8),
            Main,
            Write,
        ),
        s(
            Id::UntarGrep,
            "writes_untar_grep_6000".into(),
            "untar a 6000-file source tree, then `grep -r` it".into(),
            Some(3.5),
            Main,
            Write,
        ),
        s(
            Id::FindWarm,
            "core_find_warm".into(),
            "`find -type f`, warm".into(),
            Some(1.1),
            Main,
            Warm,
        ),
        s(
            Id::LsWarm,
            "core_ls_lR_warm".into(),
            "`ls -lR`, warm".into(),
            Some(1.1),
            Main,
            Warm,
        ),
        s(
            Id::FindCold,
            "core_find_cold".into(),
            "`find` after dropping caches".into(),
            Some(1.3),
            Main,
            Cold,
        ),
        s(
            Id::LsCold,
            "core_ls_lR_cold".into(),
            "`ls -lR` after dropping caches".into(),
            Some(1.3),
            Main,
            Cold,
        ),
        s(
            Id::Read,
            format!("core_read_{big}m_warm"),
            format!("sequential read of a {big} MiB lower file, warm"),
            Some(1.3),
            Main,
            Warm,
        ),
        s(
            Id::Readdir,
            format!("core_readdir_{wide_k}k_cold"),
            format!("readdir of a {WIDE_ENTRIES}-entry directory, cold"),
            Some(1.3),
            Wide,
            Cold,
        ),
        s(
            Id::StatDeep,
            format!("core_stat_bottom_of_{deep}_cold"),
            format!("stat files found only in the bottom of {deep} lowers, cold"),
            Some(1.0),
            Deep,
            Cold,
        ),
        s(
            Id::FindDeepWarm,
            format!("core_find_{deep}_warm"),
            format!("`find -type f` over {deep} lowers, warm"),
            Some(1.1),
            Deep,
            Warm,
        ),
        s(
            Id::FindDeepCold,
            format!("core_find_{deep}_cold"),
            format!("`find` over {deep} lowers after dropping caches"),
            Some(1.0),
            Deep,
            Cold,
        ),
        s(
            Id::LsDeepCold,
            format!("core_ls_lR_{deep}_cold"),
            format!("`ls -lR` over {deep} lowers after dropping caches"),
            Some(1.0),
            Deep,
            Cold,
        ),
        s(
            Id::AppendSmall,
            format!("writes_append_{}", tree::APP_FILES),
            format!(
                "copy-up by appending 1 byte to {} small lower files",
                tree::APP_FILES
            ),
            Some(1.0),
            Main,
            Write,
        ),
        s(
            Id::AppendBig,
            format!("writes_append_{big}m"),
            format!("copy-up by appending to a {big} MiB lower file"),
            Some(0.3),
            Main,
            Write,
        ),
        s(
            Id::SeqWrite,
            format!("writes_seq_write_{wmib}m"),
            format!("sequential write of a new {wmib} MiB file"),
            Some(1.2),
            Main,
            Write,
        ),
        s(
            Id::DpkgInstall,
            format!("writes_dpkg_install_{}", debroot::PACKAGES.len()),
            format!(
                "`dpkg -i` of {} packages into a {} {} root (the lower)",
                debroot::PACKAGES.len(),
                debroot::VARIANT,
                debroot::SUITE
            ),
            None,
            Debroot,
            Write,
        ),
        s(
            Id::TouchMinbase,
            format!("writes_touch_{TOUCH_COUNT}_as_{}_root", debroot::VARIANT),
            format!(
                "{TOUCH_COUNT} × `touch` of new files, a {} {} root as `/` (programs start from the union)",
                debroot::VARIANT,
                debroot::SUITE
            ),
            None,
            Debroot,
            Write,
        ),
    ]
}

/// A [`Spec`] with its commands, filled in from the generated trees.
pub struct Workload {
    pub spec: Spec,
    /// The timed shell command.
    pub script: String,
    /// Run after `script` (same sandbox) once before benchmarking; the
    /// combined stdout must equal `expect`.
    pub check: String,
    pub expect: String,
}

impl Deref for Workload {
    type Target = Spec;
    fn deref(&self) -> &Spec {
        &self.spec
    }
}

impl Bench {
    pub fn workloads(&self) -> Vec<Workload> {
        let m = self.mnt.display();
        let t = &self.tree;
        let bottom = t.bottom().display();
        let big_rel = tree::BIG_REL;
        let exe = self.exe.display();
        specs(&self.cfg)
            .into_iter()
            .map(|spec| {
                // The regular files a listing of the whole view must count.
                let merged_files = match spec.union {
                    Union::Deep => self.deep.merged_files,
                    _ => t.merged_files,
                };
                let (script, check, expect) = match spec.id {
                    Id::TouchRoot => (
                        format!("for i in $(seq {TOUCH_COUNT}); do touch /tmp/f$i; done"),
                        // Only sh, touch and seq exist in this root.
                        "set -- /tmp/f*; echo $#".into(),
                        format!("{TOUCH_COUNT}\n"),
                    ),
                    Id::Touch => (
                        format!("for i in $(seq {TOUCH_COUNT}); do touch {m}/tmp/f$i; done"),
                        format!("ls {m}/tmp | grep -c '^f'"),
                        format!("{TOUCH_COUNT}\n"),
                    ),
                    Id::Crd => (
                        format!("{exe} {HELPER} crd {m}/crd {CRD_COUNT}"),
                        format!("ls -A {m}/crd | wc -l"),
                        format!("{}\n", t.crd_entries),
                    ),
                    Id::UntarGrep => {
                        let tar = self.src.path.display();
                        let needle = fixtures::NEEDLE;
                        (
                            format!(
                                "mkdir {m}/src && tar -xf {tar} -C {m}/src && \
                                 grep -rF {needle} {m}/src | wc -l"
                            ),
                            format!(
                                "tar -df {tar} -C {m}/src && find {m}/src -type f | wc -l && \
                                 find {m}/src -type d | wc -l"
                            ),
                            format!(
                                "{}\n{}\n{}\n",
                                self.src.needle_lines,
                                self.src.files,
                                self.src.dirs + 1
                            ),
                        )
                    }
                    Id::FindWarm | Id::FindCold | Id::FindDeepWarm | Id::FindDeepCold => (
                        format!("find {m} -type f | wc -l"),
                        String::new(),
                        format!("{merged_files}\n"),
                    ),
                    Id::LsWarm | Id::LsCold | Id::LsDeepCold => (
                        format!("ls -lR {m} > /dev/null"),
                        format!("ls -lRa {m} | grep -c '^-'"),
                        format!("{merged_files}\n"),
                    ),
                    Id::Read => (
                        format!("cat {m}/{big_rel} > /dev/null"),
                        format!("cmp {m}/{big_rel} {bottom}/{big_rel} && wc -c < {m}/{big_rel}"),
                        format!("{}\n", t.big_size),
                    ),
                    Id::Readdir => {
                        let d = fixtures::WIDE_DIR;
                        let n = self.wide.entries + 2;
                        (
                            // -f: no sorting, no stat; `.` and `..` included.
                            format!("ls -f {m}/{d} | wc -l"),
                            format!("ls -f {m}/{d} | sort -u | wc -l"),
                            format!("{n}\n{n}\n"),
                        )
                    }
                    Id::StatDeep => (
                        format!("{exe} {HELPER} stat {m} {}", self.deep.list.display()),
                        String::new(),
                        format!("{} {}\n", self.deep.files, self.deep.bytes),
                    ),
                    Id::AppendSmall => (
                        format!("for f in {m}/app/*; do printf x >> \"$f\"; done"),
                        format!("cat {m}/app/* | wc -c"),
                        format!("{}\n", t.app_bytes + tree::APP_FILES as u64),
                    ),
                    Id::AppendBig => (
                        format!("printf x >> {m}/{big_rel}"),
                        format!("wc -c < {m}/{big_rel}"),
                        format!("{}\n", t.big_size + 1),
                    ),
                    Id::SeqWrite => {
                        let n = self.cfg.write_mib;
                        let bytes = n << 20;
                        (
                            // No conv=fsync: timed up to the page cache, like
                            // every other write workload.
                            format!("dd if=/dev/zero of={m}/tmp/new bs=1M count={n} status=none"),
                            format!("wc -c < {m}/tmp/new && cmp -n {bytes} {m}/tmp/new /dev/zero"),
                            format!("{bytes}\n"),
                        )
                    }
                    Id::DpkgInstall => self.dpkg_install(),
                    Id::TouchMinbase => (
                        format!("for i in $(seq {TOUCH_COUNT}); do touch /tmp/f$i; done"),
                        "ls /tmp | grep -c '^f'".into(),
                        format!("{TOUCH_COUNT}\n"),
                    ),
                };
                Workload {
                    spec,
                    script,
                    check,
                    expect,
                }
            })
            .collect()
    }

    /// `dpkg --root=MNT -i` of the cached `.debs`, with the host's `/dev`
    /// bound on the root's (bwrap's mounts are `nodev`, and the maintainer
    /// scripts, run in a chroot of MNT, write to `/dev/null`); the check
    /// asks dpkg's database and runs the installed perl.
    fn dpkg_install(&self) -> (String, String, String) {
        let Some(Ok(d)) = &self.debroot else {
            // Skipped before it runs (see run_all).
            return ("false".into(), String::new(), String::new());
        };
        let m = self.mnt.display();
        let debs: Vec<String> = d
            .debs
            .iter()
            .map(|p| format!("'{}'", p.display()))
            .collect();
        let names = debroot::PACKAGES.join(" ");
        (
            format!(
                "mount --bind /dev {m}/dev\ndpkg --root={m} -i {} > /dev/null",
                debs.join(" ")
            ),
            format!(
                "dpkg-query --admindir={m}/var/lib/dpkg -W -f '${{Status}}\\n' {names} | \
                 grep -c '^install ok installed$'\n\
                 chroot {m} /usr/bin/perl -MPOSIX -e 'print \"perl ok\\n\"'"
            ),
            format!("{}\nperl ok\n", debroot::PACKAGES.len()),
        )
    }
}
