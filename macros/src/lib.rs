//! The attribute macros behind `#[runtime::main]` and `#[runtime::test]`.
//!
//! Use them through the `runtime` crate, which re-exports them; the documentation lives there.
//! Each expands an `async fn` into a plain function that builds a `runtime::Runtime` and blocks
//! on the function's body:
//!
//! ```text
//! #[runtime::main(entries = 512)]        fn main() {
//! async fn main() { body }          =>       let body = async move { body };
//!                                            let rt = Builder::new().entries(512).build()…;
//!                                            rt.block_on(body)
//!                                        }
//! ```

use proc_macro::TokenStream;

mod entry;

/// Runs an `async fn main` on a new `runtime::Runtime`. See `runtime::main`.
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::expand(args.into(), item.into(), entry::Kind::Main).into()
}

/// Runs an `async fn` test on a new `runtime::Runtime`. See `runtime::test`.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::expand(args.into(), item.into(), entry::Kind::Test).into()
}
