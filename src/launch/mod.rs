//! The launcher: backend choice and FlatImage binary reading.
