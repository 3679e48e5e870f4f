//! Other processes, as `/proc` shows them: alive, dying or gone, their
//! children, their command names, which ones serve a FUSE connection.
//!
//! The PID namespace is the host's (a run does not unshare it), so a PID
//! read here names the same process everywhere in this module's callers.
use std::path::Path;

/// False only when no process `pid` exists.
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Reads `/proc/PID/status`: a zombie or dead state, or SIGKILL among the
/// pending signals (of the thread or of the whole process).
pub fn dying(status: &str) -> bool {
    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
    status.lines().any(|l| {
        let (key, value) = l.split_once(':').unwrap_or((l, ""));
        let value = value.trim();
        match key {
            "State" => value.starts_with('Z') || value.starts_with('X'),
            "SigPnd" | "ShdPnd" => {
                u64::from_str_radix(value, 16).is_ok_and(|bits| bits & SIGKILL_BIT != 0)
            }
            _ => false,
        }
    })
}

/// What is left of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Alive,
    /// Killed (SIGKILL pending) or exiting (its main thread a zombie):
    /// it will free its locks soon, without serving again.
    Dying,
    Gone,
}

/// Whether process `pid` lives, is dying, or is gone.
pub fn owner(pid: u32) -> Owner {
    if !process_alive(pid) {
        return Owner::Gone;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Owner::Gone;
    };
    if dying(&status) {
        Owner::Dying
    } else {
        Owner::Alive
    }
}

/// The PIDs whose parent is `parent`, from `/proc/*/stat`.
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read(e.path().join("stat")) else {
            continue;
        };
        if parent_in_stat(&stat) == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// The 4th field of `/proc/PID/stat`, after the command name in
/// parentheses (which may itself hold spaces and parentheses).
fn parent_in_stat(stat: &[u8]) -> Option<i32> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `123 (fimfs)`: the PID and its command name.
pub fn describe_pid(pid: u32) -> String {
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => format!("{pid} ({})", comm.trim()),
        Err(_) => pid.to_string(),
    }
}

/// The processes holding a `/dev/fuse` fd of FUSE connection `conn` (the
/// minor of the mount's device), from `fuse_connection:` in
/// `/proc/PID/fdinfo` (Linux 6.x); empty where that is not shown.
pub fn fuse_daemons(conn: u32) -> Vec<u32> {
    let want = format!("fuse_connection:\t{conn}\n");
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let serves = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l == Path::new("/dev/fuse"))
                && std::fs::read_to_string(p.path().join("fdinfo").join(fd.file_name()))
                    .is_ok_and(|info| info.contains(&want))
        });
        if serves {
            pids.push(pid);
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_or_exiting_process_is_dying() {
        let status = |state: &str, sig: &str, shd: &str| {
            format!("Name:\tfimfs\nState:\t{state}\nSigPnd:\t{sig}\nShdPnd:\t{shd}\n")
        };
        let quiet = "0000000000000000";
        assert!(!dying(&status("S (sleeping)", quiet, quiet)));
        assert!(!dying(&status("R (running)", quiet, "0000000000004000")));
        assert!(dying(&status("Z (zombie)", quiet, quiet)));
        assert!(dying(&status("S (sleeping)", quiet, "0000000000000100")));
        assert!(dying(&status("D (disk sleep)", "0000000000000100", quiet)));
    }

    #[test]
    fn parent_pid_is_read_after_the_command_name() {
        assert_eq!(parent_in_stat(b"12 (sh) S 7 12 12 0"), Some(7));
        assert_eq!(parent_in_stat(b"12 (a) b (c)) R 99 1 1"), Some(99));
        assert_eq!(parent_in_stat(b"12 (sh"), None);
    }

    #[test]
    fn this_process_is_a_child_of_its_parent() {
        let me = std::process::id() as i32;
        let parent = nix::unistd::getppid().as_raw();
        assert!(children_of(parent).contains(&me));
    }

    #[test]
    fn this_process_is_alive_and_not_dying() {
        assert!(process_alive(std::process::id()));
        assert_eq!(owner(std::process::id()), Owner::Alive);
    }
}
