//! What a user sees and gets: `fimfs mount --help` lists every `-o` option the
//! parser accepts; no ANSI colour off a terminal or with `NO_COLOR`; a clean
//! SIGINT exit logs no warning; `fimfs install` writes the binary, man pages and
//! bash/zsh/fish completions; `fimfs --version` names the git commit.

mod common;

use common::*;
use fimfs::opts::{MountOpts, table};
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const ESC: u8 = 0x1b;

fn fimfs(args: &[&str]) -> std::process::Output {
    Command::new(FIMFS).args(args).output().expect("run fimfs")
}

/// The option names of README's `-o` table (`| `name=VALUE`, `name` | … |`).
fn readme_options() -> Vec<String> {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let mut names = Vec::new();
    let mut in_table = false;
    for line in readme.lines() {
        if line.starts_with("| option | meaning |") {
            in_table = true;
            continue;
        }
        if in_table && !line.starts_with('|') {
            break;
        }
        let Some(first) = line.strip_prefix("| ").and_then(|l| l.split(" |").next()) else {
            continue;
        };
        for cell in first.split(", ") {
            let name = cell.trim_matches('`').split('=').next().unwrap_or("");
            if !name.is_empty() && !name.starts_with('-') {
                names.push(name.to_string());
            }
        }
    }
    assert!(
        names.len() > 10,
        "README's option table not found: {names:?}"
    );
    names
}

/// A value of the right kind for `name`, if it takes one.
fn sample(name: &str) -> String {
    match table::spec(name).and_then(|s| s.value) {
        Some(v) if v.contains(':') => format!("{name}=/a:/b"),
        Some("DIR") => format!("{name}=/d"),
        Some(_) => format!("{name}=1"),
        None => name.to_string(),
    }
}

#[test]
fn mount_help_lists_every_option_the_parser_accepts() {
    let out = fimfs(&["mount", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let mut names: Vec<String> = table::OPTIONS.iter().map(|s| s.name.to_string()).collect();
    names.extend(readme_options());
    names.extend(["casefold", "nopassthrough", "lower_timeout"].map(String::from));
    for name in &names {
        let opt = sample(name);
        let accepted = MountOpts::default().apply(OsStr::new(&opt)).is_ok();
        assert!(accepted, "README documents {opt}, the parser refuses it");
        let line = help.lines().find(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.split('=').next() == Some(name))
        });
        let Some(line) = line else {
            panic!("`fimfs mount --help` does not list {name}:\n{help}");
        };
        assert!(
            line.split_whitespace().count() > 2,
            "{name} has no meaning: {line}"
        );
    }
    for name in table::IGNORED.iter().chain(table::IGNORED_KEYS) {
        assert!(help.contains(name), "the ignored {name} is not in --help");
    }
    assert!(MountOpts::default().apply(OsStr::new("bogus")).is_err());
}

/// A daemon that mounts and is stopped by `signal`, its stderr a pipe;
/// returns its exit status and everything it wrote to stderr.
fn daemon_stderr(
    t: &TempDir,
    envs: &[(&str, &str)],
    signal: nix::sys::signal::Signal,
) -> (bool, Vec<u8>) {
    let lower = t.mkdir("l");
    let mnt = t.mkdir("mnt");
    let mut child = Command::new(FIMFS)
        .arg("mount")
        .arg("-f")
        .arg(&lower)
        .arg(t.join("u"))
        .arg(&mnt)
        .envs(envs.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fimfs");
    let start = std::time::Instant::now();
    while !is_fuse_mount(&mnt) && start.elapsed() < DAEMON_DEADLINE {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, signal);
    let out = child.wait_with_output().expect("wait for fimfs");
    (out.status.success(), out.stderr)
}

#[test]
fn no_colour_when_stderr_is_a_pipe_and_no_warning_at_a_clean_sigint() {
    require_root_and_fuse();
    let t = TempDir::new("msg-pipe");
    let (ok, err) = daemon_stderr(&t, &[], nix::sys::signal::Signal::SIGINT);
    let text = String::from_utf8_lossy(&err);
    assert!(ok, "exit after SIGINT: {text}");
    assert!(
        text.contains("stopping: SIGINT"),
        "the daemon logged: {text}"
    );
    assert!(!err.contains(&ESC), "colour in a pipe: {text:?}");
    assert!(
        !text.contains("WARN") && !text.contains("ERROR"),
        "a clean SIGINT exit: {text}"
    );
}

/// Runs `sh -c SCRIPT` on a terminal (`script(1)`) and returns what it wrote.
fn on_a_terminal(script: &str, envs: &[(&str, &str)]) -> Vec<u8> {
    let out = Command::new("script")
        .args(["-q", "-e", "-c", script, "/dev/null"])
        .envs(envs.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run script(1)");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    out.stdout
}

#[test]
fn no_colour_on_a_terminal_with_no_color() {
    require_root_and_fuse();
    let t = TempDir::new("msg-tty");
    let (lower, mnt) = (t.mkdir("l"), t.mkdir("mnt"));
    let script = format!(
        "{FIMFS} mount -f {l} {u} {m} & p=$!; \
         i=0; until [ $(stat -f -c %t {m}) = 65735546 ] || [ $i -gt 500 ]; do sleep .02; i=$((i+1)); done; \
         kill -TERM $p; wait $p",
        l = lower.display(),
        u = t.join("u").display(),
        m = mnt.display()
    );
    // The control: on a terminal, the log is coloured.
    let coloured = on_a_terminal(&script, &[]);
    let shown = String::from_utf8_lossy(&coloured).into_owned();
    assert!(shown.contains("stopping: SIGTERM"), "{shown}");
    assert!(
        coloured.contains(&ESC),
        "no colour on a terminal: {shown:?}"
    );
    let plain = on_a_terminal(&script, &[("NO_COLOR", "1")]);
    let shown = String::from_utf8_lossy(&plain).into_owned();
    assert!(shown.contains("stopping: SIGTERM"), "{shown}");
    assert!(!plain.contains(&ESC), "colour with NO_COLOR=1: {shown:?}");
}

fn git_head() -> String {
    let out = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run git");
    assert!(out.status.success(), "git rev-parse: not a git checkout?");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn version_names_the_git_commit() {
    let out = fimfs(&["--version"]);
    let v = String::from_utf8_lossy(&out.stdout);
    let head = git_head();
    assert!(
        out.status.success() && v.contains(&head),
        "{v:?} lacks {head}"
    );
}

const SUBCOMMANDS: &[&str] = &[
    "mount", "run", "overlay", "casefold", "diff", "export", "which", "install",
];

#[test]
fn install_writes_the_binary_man_pages_and_completions() {
    let t = TempDir::new("msg-install");
    let prefix = t.join("prefix");
    let out = Command::new(FIMFS)
        .arg("install")
        .arg("--prefix")
        .arg(&prefix)
        .output()
        .expect("run fimfs install");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bin = prefix.join("bin/fimfs");
    let v = Command::new(&bin)
        .arg("--version")
        .output()
        .expect("run the installed fimfs");
    assert!(String::from_utf8_lossy(&v.stdout).contains(&git_head()));

    let man: PathBuf = prefix.join("share/man/man1");
    let page = fs::read_to_string(man.join("fimfs.1")).expect("fimfs.1");
    assert!(
        page.starts_with(".ie") || page.starts_with(".TH"),
        "not roff: {page:.80}"
    );
    assert!(
        page.contains(".TH fimfs 1") && page.contains(".SH NAME"),
        "{page}"
    );
    for sub in SUBCOMMANDS {
        assert!(
            page.contains(&format!("fimfs\\-{sub}")),
            "fimfs.1 lacks {sub}"
        );
        let sub_page = fs::read_to_string(man.join(format!("fimfs-{sub}.1")))
            .unwrap_or_else(|e| panic!("fimfs-{sub}.1: {e}"));
        assert!(sub_page.contains(".SH SYNOPSIS"), "fimfs-{sub}.1");
    }
    let mount_page = fs::read_to_string(man.join("fimfs-mount.1")).unwrap();
    for o in table::OPTIONS {
        assert!(
            mount_page.contains(o.name),
            "fimfs-mount.1 lacks {}",
            o.name
        );
    }
    if Command::new("man")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok()
    {
        let shown = Command::new("man")
            .arg("-l")
            .arg(man.join("fimfs.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .expect("man -l");
        assert!(shown.status.success(), "man -l fimfs.1");
        assert!(String::from_utf8_lossy(&shown.stdout).contains("SUBCOMMANDS"));
    }

    for rel in [
        "share/bash-completion/completions/fimfs",
        "share/zsh/site-functions/_fimfs",
        "share/fish/vendor_completions.d/fimfs.fish",
    ] {
        let text = fs::read_to_string(prefix.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        for sub in SUBCOMMANDS {
            assert!(text.contains(sub), "{rel} lacks {sub}");
        }
    }
}
