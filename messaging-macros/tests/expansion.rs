//! The generated registration must compile against the runtime's API; a
//! stand-in for `messaging` with the contract's signatures checks that
//! without depending on the real crate.

#[test]
fn expansion_compiles_against_the_runtime_api() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/pass/*.rs");
}
