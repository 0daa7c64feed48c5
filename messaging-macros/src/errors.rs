//! Error accumulation, so one compile reports every mistake in an attribute
//! instead of making the user fix them one rebuild at a time (`serde_derive`'s
//! `Ctxt` idea, without the drop-bomb).

use std::fmt::Display;

use quote::ToTokens;

#[derive(Default)]
pub(crate) struct Errors {
    combined: Option<syn::Error>,
}

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.combined {
            Some(combined) => combined.combine(error),
            None => self.combined = Some(error),
        }
    }

    pub(crate) fn spanned(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// Keeps the value of a step that succeeded and records the error of one
    /// that failed, so later steps can still run and report their own errors.
    pub(crate) fn collect<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.push(error);
                None
            }
        }
    }

    /// For a step after which nothing further is worth checking.
    pub(crate) fn ending_with(self, last: syn::Error) -> syn::Error {
        match self.combined {
            Some(mut combined) => {
                combined.combine(last);
                combined
            }
            None => last,
        }
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        match self.combined {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::Span;

    use super::*;

    #[test]
    fn no_errors_is_ok() {
        assert!(Errors::default().finish().is_ok());
    }

    #[test]
    fn every_error_is_kept_in_order() {
        let mut errors = Errors::default();
        errors.push(syn::Error::new(Span::call_site(), "first"));
        assert_eq!(errors.collect(Ok::<_, syn::Error>(7)), Some(7));
        assert_eq!(
            errors.collect(Err::<u8, _>(syn::Error::new(Span::call_site(), "second"))),
            None
        );
        errors.spanned(quote::quote!(x), "third");
        let messages: Vec<String> = errors
            .finish()
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(messages, ["first", "second", "third"]);
    }

    #[test]
    fn ending_with_appends_the_last_error() {
        let last = || syn::Error::new(Span::call_site(), "last");
        assert_eq!(Errors::default().ending_with(last()).to_string(), "last");
        let mut errors = Errors::default();
        errors.push(syn::Error::new(Span::call_site(), "first"));
        let messages: Vec<String> = errors
            .ending_with(last())
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(messages, ["first", "last"]);
    }
}
