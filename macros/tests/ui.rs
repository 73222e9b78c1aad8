//! Compile-time checks of the attribute macros: misuse gives a spanned, explained error.

#[test]
fn misuse_is_a_spanned_compile_error() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
