//! Misusing a topic does not compile: a message can only be published on, and consumed from,
//! the keys bound to it.

#[test]
fn topics_accept_only_their_bound_message() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass_*.rs");
    cases.compile_fail("tests/ui/fail_*.rs");
}
