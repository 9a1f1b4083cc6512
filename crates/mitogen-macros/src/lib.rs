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

/// Makes a type a service: an object living in a context whose exposed
/// methods other contexts call, each under a rule of who may.
///
/// It goes on an `impl` block; each method marked `#[expose]` (taking
/// `&self` and owned `serde` arguments) becomes callable from other
/// contexts through `Context::service`:
///
/// ```ignore
/// #[derive(Default)]
/// struct Counter(std::sync::atomic::AtomicU64);
///
/// #[mitogen::service(invoker = serialized)]
/// impl Counter {
///     #[expose(policy = any)]
///     fn add(&self, n: u64) -> u64 {
///         self.0.fetch_add(n, std::sync::atomic::Ordering::SeqCst) + n
///     }
/// }
///
/// let total = ctx.service::<Counter>().call(Counter::add, 5)?;
/// ```
///
/// `Counter::add` becomes a typed `mitogen::service::Exposed` value (its
/// arguments and result are checked at the call site); the method body
/// moves to a generated trait `CounterExposed`, implemented for the type, so
/// it can still be called in this process (`counter.add(5)` where that
/// trait is in scope).
///
/// Arguments of the attribute, all optional: `invoker = concurrent |
/// serialized | deduplicated`, `threads = N` (the service's threads, 4 by
/// default), `start = parents | any | path::to::predicate` (who may start it
/// by calling it; parents by default), `new = path::to::constructor` (a
/// `fn() -> Self` or `fn() -> Result<Self, E>`; `Default::default` if left
/// out). Arguments of `#[expose]`: `policy = parents | any |
/// path::to::predicate` (parents if left out), the predicate being a
/// `fn(&mitogen::service::Caller) -> bool`.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = parse_macro_input!(
        attr with syn::punctuated::Punctuated::<syn::MetaNameValue, syn::Token![,]>::parse_terminated
    );
    let block = parse_macro_input!(item as syn::ItemImpl);
    match expand_service(args.into_iter().collect(), block) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// True when `tokens` mention `Self` (which the generated code, outside
/// the `impl`, could not resolve).
fn names_self(tokens: TokenStream2) -> bool {
    tokens.into_iter().any(|t| match t {
        proc_macro2::TokenTree::Ident(i) => i == "Self",
        proc_macro2::TokenTree::Group(g) => names_self(g.stream()),
        _ => false,
    })
}

/// A path written as text, `a::b::c`, for error messages.
fn path_text(p: &syn::Path) -> String {
    p.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

/// The path an attribute's value names (`any`, `crate::rules::mine`).
fn value_path(v: &syn::Expr) -> syn::Result<&syn::Path> {
    match v {
        syn::Expr::Path(p) if p.qself.is_none() => Ok(&p.path),
        other => Err(syn::Error::new_spanned(other, "expected a name or a path")),
    }
}

/// A rule written `parents`, `any` or as a predicate's path.
fn rule_tokens(v: &syn::Expr) -> syn::Result<TokenStream2> {
    let path = value_path(v)?;
    Ok(if path.is_ident("parents") {
        quote!(::mitogen::service::Rule::Parents)
    } else if path.is_ident("any") {
        quote!(::mitogen::service::Rule::Any)
    } else {
        let name = path_text(path);
        quote!(::mitogen::service::Rule::Predicate { name: #name, admits: #path })
    })
}

/// The `policy = …` of an `#[expose]`, if it is one.
fn expose_rule(attr: &syn::Attribute) -> syn::Result<TokenStream2> {
    if matches!(attr.meta, syn::Meta::Path(_)) {
        return Ok(quote!(::mitogen::service::Rule::Parents));
    }
    let nv = attr.parse_args::<syn::MetaNameValue>()?;
    if !nv.path.is_ident("policy") {
        return Err(syn::Error::new_spanned(
            &nv.path,
            "#[expose] takes only `policy = parents | any | path::to::predicate`",
        ));
    }
    rule_tokens(&nv.value)
}

/// The more visible of two visibilities (for the generated trait).
fn wider(a: syn::Visibility, b: &syn::Visibility) -> syn::Visibility {
    match (&a, b) {
        (syn::Visibility::Public(_), _) => a,
        (_, syn::Visibility::Public(_)) => b.clone(),
        (syn::Visibility::Inherited, syn::Visibility::Restricted(_)) => b.clone(),
        _ => a,
    }
}

fn expand_service(
    args: Vec<syn::MetaNameValue>,
    mut block: syn::ItemImpl,
) -> syn::Result<TokenStream2> {
    if block.trait_.is_some() {
        return Err(syn::Error::new_spanned(
            &block.self_ty,
            "#[mitogen::service] goes on an inherent impl block (`impl Type { … }`)",
        ));
    }
    if !block.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &block.generics,
            "a service cannot be generic: the callee must know the exact type",
        ));
    }
    let self_ty = (*block.self_ty).clone();
    let type_ident = match &self_ty {
        Type::Path(p) if p.qself.is_none() => match p.path.segments.last() {
            Some(s) if s.arguments.is_none() => s.ident.clone(),
            _ => {
                return Err(syn::Error::new_spanned(
                    &self_ty,
                    "a service is a plain named type",
                ))
            }
        },
        _ => {
            return Err(syn::Error::new_spanned(
                &self_ty,
                "a service is a plain named type",
            ))
        }
    };
    let mut invoker = quote!(::mitogen::service::Invoker::Concurrent);
    let mut threads = quote!(4usize);
    let mut start = quote!(::mitogen::service::Rule::Parents);
    let mut new = quote!(<#self_ty as ::core::default::Default>::default);
    for nv in &args {
        let key = nv
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        match key.as_str() {
            "invoker" => {
                let p = value_path(&nv.value)?;
                invoker = if p.is_ident("concurrent") {
                    quote!(::mitogen::service::Invoker::Concurrent)
                } else if p.is_ident("serialized") {
                    quote!(::mitogen::service::Invoker::Serialized)
                } else if p.is_ident("deduplicated") {
                    quote!(::mitogen::service::Invoker::Deduplicated)
                } else {
                    return Err(syn::Error::new_spanned(
                        p,
                        "invoker is `concurrent`, `serialized` or `deduplicated`",
                    ));
                };
            }
            "threads" => {
                let v = &nv.value;
                threads = quote!((#v) as usize);
            }
            "start" => start = rule_tokens(&nv.value)?,
            "new" => {
                let p = value_path(&nv.value)?;
                new = quote!(#p);
            }
            _ => {
                return Err(syn::Error::new_spanned(
                    &nv.path,
                    "#[mitogen::service] takes `invoker`, `threads`, `start` and `new`",
                ))
            }
        }
    }

    let trait_ident = format_ident!("{}Exposed", type_ident);
    let mut trait_vis = syn::Visibility::Inherited;
    let mut kept = Vec::new();
    let mut consts = Vec::new();
    let mut trait_sigs = Vec::new();
    let mut trait_fns = Vec::new();
    let mut invokes = Vec::new();
    let mut entries = Vec::new();
    for item in std::mem::take(&mut block.items) {
        let syn::ImplItem::Fn(mut f) = item else {
            kept.push(item);
            continue;
        };
        let Some(pos) = f.attrs.iter().position(|a| a.path().is_ident("expose")) else {
            kept.push(syn::ImplItem::Fn(f));
            continue;
        };
        let attr = f.attrs.remove(pos);
        let rule = expose_rule(&attr)?;
        let sig = &f.sig;
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            return Err(syn::Error::new_spanned(
                &sig.generics,
                "exposed methods cannot be generic: the callee must know the exact types",
            ));
        }
        if sig.asyncness.is_some() {
            return Err(syn::Error::new_spanned(
                sig.asyncness,
                "exposed methods cannot be async (they run on the service's threads)",
            ));
        }
        let mut inputs = sig.inputs.iter();
        match inputs.next() {
            Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
            other => {
                return Err(syn::Error::new_spanned(
                    other.map(|a| quote!(#a)).unwrap_or_else(|| quote!(#sig)),
                    "an exposed method takes `&self` (calls may run side by side: keep \
                     state behind a Mutex or atomics)",
                ))
            }
        }
        let mut arg_types = Vec::new();
        for arg in inputs {
            let FnArg::Typed(pt) = arg else { continue };
            if let Type::Reference(r) = &*pt.ty {
                return Err(syn::Error::new_spanned(
                    r,
                    "exposed method arguments must be owned (they are decoded from a message)",
                ));
            }
            arg_types.push((*pt.ty).clone());
        }
        let name = sig.ident.clone();
        let name_str = name.to_string();
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
        for ty in arg_types.iter().chain(std::iter::once(&ret)) {
            if names_self(quote!(#ty)) {
                return Err(syn::Error::new_spanned(
                    ty,
                    "write the type's name instead of `Self` in an exposed method's \
                     arguments and result",
                ));
            }
        }
        let args_tuple = quote!((#(#arg_types,)*));
        let docs: Vec<_> = f
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .collect();
        let vis = &f.vis;
        trait_vis = wider(trait_vis, vis);
        consts.push(quote! {
            #(#docs)*
            ///
            /// *Exposed method*: call it in a context with
            /// `ctx.service::<Self>().call(...)`.
            #[allow(non_upper_case_globals, dead_code)]
            #vis const #name: ::mitogen::service::Exposed<#self_ty, #args_tuple, #output> =
                ::mitogen::service::Exposed::new(#name_str);
        });
        let mut trait_sig = f.sig.clone();
        trait_sig.inputs.iter_mut().for_each(|a| {
            if let FnArg::Typed(pt) = a {
                // Patterns such as `mut x` are for the body, not the trait.
                if let syn::Pat::Ident(pi) = &mut *pt.pat {
                    pi.mutability = None;
                }
            }
        });
        trait_sigs.push(quote!(#(#docs)* #trait_sig;));
        f.vis = syn::Visibility::Inherited;
        trait_fns.push(f);
        let invoke_ident = format_ident!("__invoke_{}", name);
        let arg_names: Vec<_> = (0..arg_types.len())
            .map(|i| format_ident!("__arg{}", i))
            .collect();
        invokes.push(quote! {
            fn #invoke_ident(
                __svc: &(dyn ::core::any::Any + ::core::marker::Send + ::core::marker::Sync),
                __bytes: &[u8],
            ) -> ::mitogen::__private::Invoked {
                let __svc = ::mitogen::service::__private::downcast::<#self_ty>(__svc)?;
                let (#(#arg_names,)*): #args_tuple = ::mitogen::__private::decode_args(
                    <#self_ty as ::mitogen::service::Service>::NAME,
                    __bytes,
                )?;
                let __out = <#self_ty as #trait_ident>::#name(__svc, #(#arg_names),*);
                #encode
            }
        });
        entries.push(quote! {
            ::mitogen::service::__private::MethodEntry {
                name: #name_str,
                rule: #rule,
                invoke: #invoke_ident,
            }
        });
    }
    block.items = kept;
    let type_str = type_ident.to_string();
    let attrs = &block.attrs;
    let kept_items = &block.items;
    let trait_doc = format!(
        "The exposed methods of [`{type_str}`], to call them in this process \
         (generated by `#[mitogen::service]`)."
    );
    Ok(quote! {
        #(#attrs)*
        impl #self_ty {
            #(#kept_items)*
            #(#consts)*
        }

        #[doc = #trait_doc]
        #trait_vis trait #trait_ident {
            #(#trait_sigs)*
        }

        impl #trait_ident for #self_ty {
            #(#trait_fns)*
        }

        impl ::mitogen::service::Service for #self_ty {
            const NAME: &'static str = concat!(module_path!(), "::", #type_str);
        }

        const _: () = {
            #(#invokes)*

            fn __new() -> ::core::result::Result<
                ::mitogen::service::__private::Instance,
                ::mitogen::__private::Failure,
            > {
                ::mitogen::service::__private::instance::<#self_ty>(#new())
            }

            #[::mitogen::__private::linkme::distributed_slice(::mitogen::service::__private::SERVICES)]
            #[linkme(crate = ::mitogen::__private::linkme)]
            static __SERVICE: ::mitogen::service::__private::ServiceEntry =
                ::mitogen::service::__private::ServiceEntry {
                    name: <#self_ty as ::mitogen::service::Service>::NAME,
                    start: #start,
                    invoker: #invoker,
                    threads: #threads,
                    new: __new,
                    methods: &[#(#entries),*],
                };
        };
    })
}
