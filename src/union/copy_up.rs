//! Copy-up (placeholder until the write side lands).
use super::Union;
use super::node::Node;
use crate::sys::{Errno, Result};
use std::sync::Arc;

impl Union {
    pub(super) fn copy_up(&self, _node: &Arc<Node>, _truncate: bool) -> Result<()> {
        Err(Errno::EROFS)
    }
}
