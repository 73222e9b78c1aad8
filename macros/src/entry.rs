//! Parsing the attribute's arguments and the annotated function, and generating the wrapper.
//!
//! On any error the function is emitted unchanged next to a `compile_error!`, so the user sees
//! the spanned message and no cascade of unrelated errors.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote, quote_spanned};
use syn::{
    Expr, ExprLit, ItemFn, Lit, MetaNameValue, Path, ReturnType, Token, parse::Parser,
    punctuated::Punctuated, spanned::Spanned,
};

/// Which attribute is being expanded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Main,
    Test,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Main => "runtime::main",
            Kind::Test => "runtime::test",
        }
    }
}

/// The recognised arguments.
struct Config {
    /// The builder call that sets the worker count: `.worker_threads(1)` unless `threads` says
    /// otherwise (one worker keeps the function's tasks on its thread), nothing for
    /// `threads = "auto"` (the builder's default, one worker per CPU).
    threads: TokenStream,
    /// Other builder calls, e.g. `.entries(512)`.
    builder_calls: Vec<TokenStream>,
    krate: Path,
}

pub(crate) fn expand(args: TokenStream, item: TokenStream, kind: Kind) -> TokenStream {
    let function = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(f) => f,
        // Not a function: let the compiler report it, plus our message.
        Err(e) => return with_error(item, e),
    };
    let config = match parse_args(args) {
        Ok(c) => c,
        Err(e) => return with_error(inert(function), e),
    };
    match generate(function.clone(), config, kind) {
        Ok(tokens) => tokens,
        Err(e) => with_error(inert(function), e),
    }
}

/// The function made harmless for the error path: not `async` (which `main` may not be) and
/// not run, with its body still type-checked inside an async block so that its own errors are
/// reported and no unrelated ones appear.
fn inert(function: ItemFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        mut sig,
        block,
    } = function;
    if sig.asyncness.take().is_none() {
        // Not async to begin with: emit it as written.
        return quote! { #(#attrs)* #vis #sig #block };
    }
    quote! {
        #(#attrs)*
        #vis #sig {
            let _ = async move #block;
            ::core::unreachable!()
        }
    }
}

fn with_error(item: TokenStream, error: syn::Error) -> TokenStream {
    let error = error.into_compile_error();
    quote! { #item #error }
}

fn parse_args(args: TokenStream) -> syn::Result<Config> {
    let pairs = Punctuated::<MetaNameValue, Token![,]>::parse_terminated.parse2(args)?;
    let mut config = Config {
        threads: quote! { .worker_threads(1) },
        builder_calls: Vec::new(),
        krate: syn::parse_quote!(::runtime),
    };
    for pair in pairs {
        let name = pair
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        match name.as_str() {
            "threads" => {
                config.threads = match &pair.value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Str(s), ..
                    }) if s.value() == "auto" => quote! {},
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(int), ..
                    }) => {
                        let n = int.base10_parse::<u32>()?;
                        if n == 0 {
                            return Err(syn::Error::new(
                                int.span(),
                                "`threads` must be at least 1",
                            ));
                        }
                        let n = n as usize;
                        quote! { .worker_threads(#n) }
                    }
                    value => {
                        return Err(syn::Error::new(
                            value.span(),
                            "`threads` takes an integer or \"auto\", e.g. `threads = 4`",
                        ));
                    }
                };
            }
            "entries" | "cq_entries" => {
                let value = int_literal(&pair.value, &name)?;
                let method = syn::Ident::new(&name, pair.path.span());
                config.builder_calls.push(quote! { .#method(#value) });
            }
            "crate" => {
                let Expr::Lit(ExprLit {
                    lit: Lit::Str(path),
                    ..
                }) = &pair.value
                else {
                    return Err(syn::Error::new(
                        pair.value.span(),
                        "`crate` takes a string, e.g. `crate = \"my_runtime\"`",
                    ));
                };
                config.krate = path.parse()?;
            }
            _ => {
                return Err(syn::Error::new(
                    pair.path.span(),
                    format!(
                        "unknown argument `{}`; expected `threads`, `entries`, `cq_entries` or \
                         `crate`",
                        pair.path.to_token_stream()
                    ),
                ));
            }
        }
    }
    Ok(config)
}

fn int_literal(value: &Expr, name: &str) -> syn::Result<u32> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => int.base10_parse::<u32>(),
        _ => Err(syn::Error::new(
            value.span(),
            format!("`{name}` takes an integer, e.g. `{name} = 1024`"),
        )),
    }
}

fn generate(function: ItemFn, config: Config, kind: Kind) -> syn::Result<TokenStream> {
    let sig = &function.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            format!(
                "the `async` keyword is missing from the function declaration; \
                 `#[{}]` runs an `async fn`",
                kind.name()
            ),
        ));
    }
    if !sig.inputs.is_empty() {
        return Err(syn::Error::new(
            sig.inputs.span(),
            format!("`#[{}]` functions take no arguments", kind.name()),
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            format!("`#[{}]` functions cannot be generic", kind.name()),
        ));
    }

    let ItemFn {
        attrs,
        vis,
        mut sig,
        block,
    } = function;
    sig.asyncness = None;
    let output = match &sig.output {
        ReturnType::Default => quote! { () },
        ReturnType::Type(_, ty) => quote! { #ty },
    };
    let krate = &config.krate;
    let threads = &config.threads;
    let calls = &config.builder_calls;
    let on_error = match kind {
        Kind::Main => quote! {
            ::std::eprintln!("error: could not start the runtime: {}", error);
            ::std::process::exit(1)
        },
        Kind::Test => quote! {
            ::core::panic!("could not start the runtime: {}", error)
        },
    };
    let test_attr = match kind {
        Kind::Test if !attrs.iter().any(|a| a.path().is_ident("test")) => {
            quote! { #[::core::prelude::v1::test] }
        }
        _ => quote! {},
    };
    let span = block.span();
    let body = quote_spanned! {span=>
        let body = ::core::pin::pin!(async move #block);
        let body: ::core::pin::Pin<&mut dyn ::core::future::Future<Output = #output>> = body;
        let rt = match #krate::Builder::new() #threads #(#calls)* .build() {
            ::core::result::Result::Ok(rt) => rt,
            ::core::result::Result::Err(error) => { #on_error }
        };
        #[allow(clippy::needless_return)]
        return rt.block_on(body);
    };
    Ok(quote! {
        #test_attr
        #(#attrs)*
        #vis #sig {
            #body
        }
    })
}
