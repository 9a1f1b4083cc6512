//! Procedural macros of `mitogen`; use them through the `mitogen` crate
//! (`#[mitogen::remote]`, `#[mitogen::main]`).

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::{parse_macro_input, FnArg, GenericArgument, ItemFn, PathArguments, ReturnType, Type};

/// Makes a function callable in other contexts.
///
/// The function keeps its name and can still be called locally as before; the
/// name also becomes a value implementing `mitogen::RemoteFn`, which
/// `Context::call` takes together with the argument tuple:
///
/// ```ignore
/// #[mitogen::remote]
/// fn add(a: u32, b: u32) -> u32 { a + b }
///
/// assert_eq!(add(1, 2), 3);                    // a local call
/// assert_eq!(ctx.call(add, (1, 2))?, 3);       // the same function, in `ctx`
/// ```
///
/// A function of one argument also takes it bare (`ctx.call(double, 21)` as
/// well as `ctx.call(double, (21,))`), and one whose single argument is a
/// `String` also takes a `&str` (`ctx.call(disk_free, "/")`).
///
/// Calls into a context run one at a time, in order, on its main thread.
/// `#[mitogen::remote(concurrent)]` lets a function run on a small pool of
/// the context's threads instead, beside other calls (for calls that wait:
/// on the network, on a child process, on a lock). Such a call made through
/// a `CallChain` still runs in the chain's order.
///
/// Arguments must be owned `serde` types (no references, no generics). A
/// function returning `Result<T, E>` (any type named `Result`, such as
/// `std::io::Result<T>` or `anyhow::Result<T>`) sends `T` back on success and its
/// error, with the `source()` chain, as a `CallError`; `E` must convert into
/// `Box<dyn Error + Send + Sync>`. While it runs in a context,
/// `mitogen::cancelled()` tells whether its caller gave up waiting.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    let concurrent = if attr.is_empty() {
        false
    } else {
        let word = parse_macro_input!(attr as syn::Ident);
        if word != "concurrent" {
            return syn::Error::new_spanned(
                word,
                "#[mitogen::remote] takes no argument but `concurrent`",
            )
            .to_compile_error()
            .into();
        }
        true
    };
    let func = parse_macro_input!(item as ItemFn);
    match expand_remote(func, concurrent) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// The `T` of a return type named `Result<T, ..>`, if it is one.
fn result_ok_type(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    }
}

/// True for a type written `String` or `std::string::String` (with or
/// without a leading `::`): such an argument also takes a `&str`.
fn is_string(ty: &Type) -> bool {
    let Type::Path(p) = ty else { return false };
    if p.qself.is_some() {
        return false;
    }
    let names: Vec<String> = p
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    let plain = p.path.segments.iter().all(|s| s.arguments.is_none());
    plain && (names == ["String"] || names == ["std", "string", "String"])
}

fn expand_remote(func: ItemFn, concurrent: bool) -> syn::Result<TokenStream2> {
    let sig = &func.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "remote functions cannot be generic: the callee must know the exact types",
        ));
    }
    if sig.asyncness.is_some() {
        return Err(syn::Error::new_spanned(
            sig.asyncness,
            "remote functions cannot be async (they run on a thread of the context: its main \
             thread, or its pool with #[mitogen::remote(concurrent)])",
        ));
    }
    let mut arg_types = Vec::new();
    for arg in &sig.inputs {
        match arg {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new_spanned(
                    r,
                    "remote functions cannot take self",
                ))
            }
            FnArg::Typed(pt) => {
                if let Type::Reference(r) = &*pt.ty {
                    return Err(syn::Error::new_spanned(
                        r,
                        "remote function arguments must be owned (they are decoded from a message)",
                    ));
                }
                arg_types.push((*pt.ty).clone());
            }
        }
    }
    let vis = &func.vis;
    let name = &sig.ident;
    let attrs = &func.attrs;
    let docs: Vec<_> = attrs.iter().filter(|a| a.path().is_ident("doc")).collect();
    let ret: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    };
    let (output, encode) = match result_ok_type(&ret) {
        Some(ok) => (
            ok.clone(),
            quote!(::mitogen::__private::encode_result(__out)),
        ),
        None => (ret.clone(), quote!(::mitogen::__private::encode_ok(&__out))),
    };
    let impl_name = format_ident!("__mitogen_impl_{}", name);
    let mut impl_fn = func.clone();
    impl_fn.sig.ident = impl_name.clone();
    impl_fn.vis = syn::Visibility::Inherited;
    impl_fn.attrs.retain(|a| !a.path().is_ident("doc"));
    let arg_names: Vec<_> = (0..arg_types.len())
        .map(|i| format_ident!("__arg{}", i))
        .collect();
    let args_tuple = quote!((#(#arg_types,)*));
    let name_str = name.to_string();
    // The forms a call accepts besides the tuple: the bare value of a single
    // argument, and a `&str` for a single `String`. Each impl is keyed by
    // this function's own type, so they never overlap another function's.
    let single = match arg_types.as_slice() {
        [ty] => {
            let from_str = is_string(ty).then(|| {
                quote! {
                    impl ::mitogen::IntoArgs<#name> for &str {
                        fn into_args(self) -> #args_tuple {
                            (::std::string::String::from(self),)
                        }
                    }
                }
            });
            quote! {
                impl ::mitogen::IntoArgs<#name> for #ty {
                    fn into_args(self) -> #args_tuple {
                        (self,)
                    }
                }
                #from_str
            }
        }
        _ => quote!(),
    };

    Ok(quote! {
        #(#docs)*
        ///
        /// *Remote function*: call it here as usual, or in another context with
        /// `Context::call`.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug)]
        #vis struct #name;

        const _: () = {
            #impl_fn

            impl ::mitogen::RemoteFn for #name {
                type Args = #args_tuple;
                type Output = #output;
                const NAME: &'static str = concat!(module_path!(), "::", #name_str);
            }

            impl ::mitogen::IntoArgs<#name> for #args_tuple {
                fn into_args(self) -> #args_tuple {
                    self
                }
            }

            #single

            impl ::core::ops::Deref for #name {
                type Target = fn(#(#arg_types),*) -> #ret;
                fn deref(&self) -> &Self::Target {
                    const F: fn(#(#arg_types),*) -> #ret = #impl_name;
                    &F
                }
            }

            fn __invoke(__bytes: &[u8]) -> ::mitogen::__private::Invoked {
                let (#(#arg_names,)*): #args_tuple = ::mitogen::__private::decode_args(
                    <#name as ::mitogen::RemoteFn>::NAME,
                    __bytes,
                )?;
                let __out = #impl_name(#(#arg_names),*);
                #encode
            }

            #[::mitogen::__private::linkme::distributed_slice(::mitogen::__private::REMOTE_FNS)]
            #[linkme(crate = ::mitogen::__private::linkme)]
            static __ENTRY: ::mitogen::__private::RemoteEntry = ::mitogen::__private::RemoteEntry {
                name: <#name as ::mitogen::RemoteFn>::NAME,
                invoke: __invoke,
                concurrent: #concurrent,
            };
        };
    })
}

/// Makes `main` the entry point of a mitogen program.
///
/// Before any user code runs it checks whether this process was started as a
/// child context; if so it serves calls and never runs the body. In the master
/// it runs the body with a fresh `mitogen::Router`:
///
/// ```ignore
/// #[mitogen::main]
/// fn main(router: mitogen::Router) -> anyhow::Result<()> {
///     let child = router.local()?;
///     Ok(())
/// }
/// ```
///
/// `main` may also take no argument (the router is made all the same:
/// `mitogen::Router::current()` returns it) and may return anything `main`
/// can.
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(Span::call_site(), "#[mitogen::main] takes no arguments")
            .to_compile_error()
            .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    let sig = &func.sig;
    if sig.ident != "main" {
        return syn::Error::new_spanned(&sig.ident, "#[mitogen::main] goes on fn main")
            .to_compile_error()
            .into();
    }
    if sig.asyncness.is_some() {
        return syn::Error::new_spanned(
            sig.asyncness,
            "#[mitogen::main] cannot be async; start your runtime inside main",
        )
        .to_compile_error()
        .into();
    }
    let attrs = &func.attrs;
    let vis = &func.vis;
    let output = &sig.output;
    let block = &func.block;
    let inputs = &sig.inputs;
    let call = if inputs.is_empty() {
        quote!(::mitogen::run(|_router| __mitogen_user_main()))
    } else {
        quote!(::mitogen::run(__mitogen_user_main))
    };
    quote! {
        #(#attrs)*
        #vis fn main() #output {
            fn __mitogen_user_main(#inputs) #output #block
            #call
        }
    }
    .into()
}
