//! Placeholder: filled in by the scale benchmark work.
fn main() {}
