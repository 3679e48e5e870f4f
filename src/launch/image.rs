//! The launcher's view of a FlatImage binary's overlay byte: the byte
//! decoded as a [`Backend`]. The binary itself is read and written by
//! `image::binary` (below `layer/`, so `fimfs mount` can expand a binary's
//! layers too).
use super::choice::Backend;
use crate::image::binary::{Image, ImageError};

impl Image {
    /// The overlay byte decoded; `None` when it is no valid mask (a fresh
    /// image holds `0x00`).
    pub fn overlay(&self) -> Option<Backend> {
        Backend::from_mask(self.overlay_byte())
    }

    /// Stores `backend`'s mask in the overlay byte, as `fim-overlay set`
    /// does. Writes that one byte and nothing else.
    pub fn set_overlay(&mut self, backend: Backend) -> Result<(), ImageError> {
        self.set_overlay_byte(backend.mask())
    }
}
