//! Generated topics accept only their bound message: a message can only be published on, and
//! consumed from, the keys bound to it, and anything else does not compile.
//!
//! The bindings are generated here, from `tests/fixtures/topics`, into a scratch directory that
//! the cases `include!` through `KEYWAY_UI_BINDINGS`. The cases depend only on
//! `keyway-runtime` without features, so trybuild's separate build stays small.

use std::path::Path;

#[test]
fn topics_accept_only_their_bound_message() {
    let fixtures = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/topics"
    ));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-bindings");
    keyway_codegen::Builder::new()
        .out_dir(&out)
        .compile_protos(
            &["orders/v1/orders.proto", "billing/v1/billing.proto"],
            &[fixtures],
        )
        .expect("the fixture generates");
    // trybuild runs cargo (and so rustc) with this process's environment.
    std::env::set_var("KEYWAY_UI_BINDINGS", &out);

    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass_*.rs");
    cases.compile_fail("tests/ui/fail_*.rs");
}
