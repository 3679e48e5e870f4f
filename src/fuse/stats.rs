//! Request counts for profiling: with `FIMFS_STATS=FILE`, the daemon counts
//! the requests it handles, by kind, and writes `KIND COUNT` lines to FILE
//! when it stops. Off (one relaxed load per request) otherwise.
use std::collections::BTreeMap;
use std::sync::OnceLock;

type Counts = parking_lot::Mutex<BTreeMap<&'static str, u64>>;

fn table() -> Option<&'static Counts> {
    static T: OnceLock<Option<Counts>> = OnceLock::new();
    T.get_or_init(|| {
        std::env::var_os("FIMFS_STATS").map(|_| parking_lot::Mutex::new(BTreeMap::new()))
    })
    .as_ref()
}

/// Counts one request of kind `op`.
pub fn count(op: &'static str) {
    if let Some(t) = table() {
        *t.lock().entry(op).or_insert(0) += 1;
    }
}

/// Writes the counts to `$FIMFS_STATS`, if set.
pub fn dump() {
    let (Some(t), Some(path)) = (table(), std::env::var_os("FIMFS_STATS")) else {
        return;
    };
    let mut out = String::new();
    let mut total = 0;
    for (op, n) in t.lock().iter() {
        out.push_str(&format!("{op} {n}\n"));
        total += n;
    }
    out.push_str(&format!("total {total}\n"));
    if let Err(e) = std::fs::write(&path, out) {
        tracing::warn!("FIMFS_STATS: writing {}: {e}", path.to_string_lossy());
    }
}
