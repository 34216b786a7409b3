//! Topic registries for clients in other languages, generated from the same descriptor pool.

pub mod python;
pub mod typescript;
