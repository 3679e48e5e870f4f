//! `fimfs install [--prefix DIR]`: this binary, its man pages and its
//! bash, zsh and fish completions, all generated from the clap definitions,
//! under a prefix laid out as Debian's tools look for them.
use super::error::InstallError;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where each file goes under the prefix.
pub const BIN: &str = "bin/fimfs";
pub const MAN_DIR: &str = "share/man/man1";
pub const BASH: &str = "share/bash-completion/completions/fimfs";
pub const ZSH: &str = "share/zsh/site-functions/_fimfs";
pub const FISH: &str = "share/fish/vendor_completions.d/fimfs.fish";

/// Writes `bytes` to `dest` through a temporary file renamed into place, so
/// that a running `fimfs` at `dest` keeps its text and readers never see
/// half a file.
fn write_atomic(dest: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    use std::os::unix::fs::PermissionsExt;
    let named = |source| InstallError::Write {
        path: dest.to_path_buf(),
        source,
    };
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(named)?;
    let mut tmp: OsString = dest.as_os_str().to_owned();
    tmp.push(format!(".fimfs-install-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let res = std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)))
        .and_then(|()| std::fs::rename(&tmp, dest));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(named)
}

/// The man pages: `fimfs.1` and one `fimfs-SUBCOMMAND.1` per subcommand.
fn man_pages(cmd: &clap::Command) -> Result<Vec<(String, Vec<u8>)>, InstallError> {
    let render = |c: clap::Command, name: String| {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c)
            .render(&mut buf)
            .map(|()| (format!("{name}.1"), buf))
            .map_err(|source| InstallError::ManPage { name, source })
    };
    let mut pages = vec![render(cmd.clone(), "fimfs".into())?];
    for sub in cmd.get_subcommands() {
        let name = format!("fimfs-{}", sub.get_name());
        pages.push(render(sub.clone().name(name.clone()), name)?);
    }
    Ok(pages)
}

fn completion(cmd: &clap::Command, shell: clap_complete::Shell) -> Vec<u8> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd.clone(), "fimfs", &mut buf);
    buf
}

/// Installs everything under `prefix` and prints each path written.
pub fn install(cmd: &clap::Command, prefix: &Path) -> Result<(), InstallError> {
    use clap_complete::Shell;
    let exe = std::env::current_exe().map_err(InstallError::CurrentExe)?;
    let bin = std::fs::read(&exe).map_err(|source| InstallError::Read {
        path: exe.clone(),
        source,
    })?;
    let mut files = vec![(prefix.join(BIN), bin, 0o755)];
    for (name, page) in man_pages(cmd)? {
        files.push((prefix.join(MAN_DIR).join(name), page, 0o644));
    }
    for (rel, shell) in [(BASH, Shell::Bash), (ZSH, Shell::Zsh), (FISH, Shell::Fish)] {
        files.push((prefix.join(rel), completion(cmd, shell), 0o644));
    }
    for (dest, bytes, mode) in files {
        write_atomic(&dest, &bytes, mode)?;
        // A closed stdout (`| head`) must not stop the installation.
        let _ = writeln!(std::io::stdout(), "{}", dest.display());
    }
    Ok(())
}
