//! What `fimfs run --dry-run` prints: the backend and why, the layers (an
//! image named `FILE@OFFSET+SIZE` when it does not start its file), on
//! BWRAP the mount each image lower would get, the daemon's mount when
//! there is one, and the bwrap command line.
use super::super::bwrap::{self, Sandbox, View};
use super::super::mounts::{overlay_dirs, planned};
use super::{Launch, Mode, Origin};
use crate::image::source::Source;

impl Launch {
    pub(super) fn command_line(&self, sandbox: &Sandbox<'_>) -> String {
        let mut argv = vec![self.bwrap.path.clone().into_os_string()];
        argv.extend(sandbox.args());
        bwrap::shell_line(&argv)
    }

    /// What `--dry-run` prints.
    pub fn describe(&self) -> String {
        let paths = self.paths();
        let (work, mnt) = (paths.work(), paths.mount());
        let mut out = format!(
            "backend: {}\nreason: {}\n",
            self.choice.backend, self.choice.reason
        );
        out.push_str(&self.origin.line());
        for (i, l) in self.lowers.iter().enumerate() {
            out.push_str(&format!("lower {}: {}\n", i + 1, name(l)));
        }
        let line = match &self.mode {
            Mode::Kernel => {
                for (image, at) in planned(&self.lowers, &paths) {
                    out.push_str(&format!("layer mount: {image} at {}\n", at.display()));
                }
                let lowers = overlay_dirs(&self.lowers, &paths);
                self.command_line(&self.sandbox(
                    View::Overlay {
                        lowers: &lowers,
                        upper: &self.upper,
                        work: &work,
                    },
                    None,
                ))
            }
            Mode::Daemon { why } => {
                if let Some(why) = why {
                    out.push_str(&format!("note: {why}: the fimfs daemon serves the view\n"));
                }
                let names: Vec<String> = self.lowers.iter().map(name).collect();
                out.push_str(&format!(
                    "daemon: fimfs mount {} {} {}{}\n",
                    names.join(":"),
                    self.upper.display(),
                    mnt.display(),
                    if self.casefold { " -o casefold" } else { "" }
                ));
                self.command_line(&self.sandbox(View::Bind(&mnt), None))
            }
        };
        out.push_str(&format!("command: {line}\n"));
        out
    }
}

/// A lower as `LOWERS` would name it.
pub(super) fn name(l: &Source) -> String {
    match l {
        Source::Dir(p) => p.display().to_string(),
        Source::Image(at) => at.name(),
    }
}

impl Origin {
    /// The `layers:` line: which form of the command gave the lowers.
    fn line(&self) -> String {
        match self {
            Origin::Lowers => "layers: LOWERS as given\n".into(),
            Origin::Own {
                binary,
                counts,
                data_layers,
                skipped,
            } => {
                let mut s = format!(
                    "layers: the own layers of {} ({} embedded, {} from FIM_LAYERS, {} from {})\n",
                    binary.display(),
                    counts[0],
                    counts[1],
                    counts[2],
                    data_layers.display()
                );
                for k in skipped {
                    s.push_str(&format!("skipped: {k}\n"));
                }
                s
            }
        }
    }
}
