//! The kitchen-sink fixture as pbjson-build generates it, for the differential tests in
//! `tests/`. Not a product: it exists to keep the evidence for keyway's own codec runnable.
#![allow(missing_docs, unreachable_pub, clippy::all)]

pub mod keyway {
    pub mod fixtures {
        pub mod kitchen {
            include!(concat!(env!("OUT_DIR"), "/keyway.fixtures.kitchen.rs"));
            include!(concat!(
                env!("OUT_DIR"),
                "/keyway.fixtures.kitchen.serde.rs"
            ));
        }
        pub mod other {
            include!(concat!(env!("OUT_DIR"), "/keyway.fixtures.other.rs"));
            include!(concat!(env!("OUT_DIR"), "/keyway.fixtures.other.serde.rs"));
        }
    }
}
