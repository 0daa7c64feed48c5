//! Each case's error must come from the macro itself, pointing at the token
//! to fix; the `.stderr` files pin both the message and the span.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
