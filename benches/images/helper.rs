//! The benchmark binary's own helper commands (`--fimfs-images-helper
//! CMD …`), run as the timed process where a shell pipeline would time
//! process start-ups instead of the filesystem:
//!
//! - `stat ROOT LIST`: `lstat`s each path of LIST under ROOT; prints how
//!   many exist, how many do not, and the sum of the sizes.
//! - `seqread FILE`: reads FILE in 1 MiB requests; prints its size and a
//!   checksum of 8 bytes in every 512.
//! - `randread FILE N`: N reads of 4 KiB at fixed pseudo-random offsets;
//!   prints a checksum.
use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::tree::Rng;

/// A checksum of 8 bytes in every 512 (cheap next to the read it checks).
fn sample(acc: &mut u64, buf: &[u8]) {
    for c in buf.chunks(512) {
        sum(acc, &c[..c.len().min(8)]);
    }
}

fn sum(acc: &mut u64, buf: &[u8]) {
    for c in buf.chunks(8) {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        *acc = acc.rotate_left(5) ^ u64::from_le_bytes(w);
    }
}

fn stat(root: &Path, list: &Path) -> Result<String, String> {
    let text = fs::read_to_string(list).map_err(|e| e.to_string())?;
    let (mut found, mut missing, mut bytes) = (0u64, 0u64, 0u64);
    for name in text.lines().filter(|l| !l.is_empty()) {
        match fs::symlink_metadata(root.join(name)) {
            Ok(m) => {
                found += 1;
                bytes += m.len();
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing += 1,
            Err(e) => return Err(format!("{name}: {e}")),
        }
    }
    Ok(format!("found {found} missing {missing} bytes {bytes}"))
}

fn seqread(file: &Path) -> Result<String, String> {
    let mut f = fs::File::open(file).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut size, mut acc) = (0u64, 0u64);
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        size += n as u64;
        sample(&mut acc, &buf[..n]);
    }
    Ok(format!("size {size} sum {acc:016x}"))
}

fn randread(file: &Path, n: u64) -> Result<String, String> {
    let f = fs::File::open(file).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut rng = Rng::new(0x4a4d_0001);
    let mut buf = vec![0u8; 4096];
    let mut acc = 0u64;
    for _ in 0..n {
        let off = rng.below(len.saturating_sub(4096).max(1)) & !4095;
        let got = f.read_at(&mut buf, off).map_err(|e| e.to_string())?;
        sum(&mut acc, &buf[..got]);
    }
    Ok(format!("reads {n} sum {acc:016x}"))
}

/// Runs the helper `args` names; exits the process.
pub fn main(args: &[String]) -> ! {
    let a = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let r = match a(0) {
        "stat" => stat(Path::new(a(1)), Path::new(a(2))),
        "seqread" => seqread(Path::new(a(1))),
        "randread" => randread(Path::new(a(1)), a(2).parse().unwrap_or(1000)),
        other => Err(format!("unknown helper {other:?}")),
    };
    match r {
        Ok(out) => {
            println!("{out}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("fimfs-images helper: {e}");
            std::process::exit(1)
        }
    }
}
