//! [`Secrets`]: values that must never be shown (API keys, header values, tool servers'
//! environment), and the scrubbing that replaces them with `***` in any text.

use std::borrow::Cow;
use std::fmt;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Values shorter than this are not masked: they would garble ordinary words in messages,
/// and a value that short guards nothing.
const MIN_LEN: usize = 6;

/// Schemes of `Authorization`-style values whose token is also masked on its own, since an
/// upstream may echo the bare token.
const SCHEMES: [&str; 4] = ["bearer", "basic", "token", "apikey"];

/// A set of secret values; `Debug` prints only how many.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// Longest first, so a value that contains another is masked whole.
    values: Vec<String>,
}

impl Secrets {
    /// The secrets among `values`: each value, and the token of a `Bearer <token>`-style one.
    pub fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut found = Vec::new();
        for value in values {
            let value = value.as_ref().trim();
            found.push(value.to_string());
            if let Some((scheme, token)) = value.split_once(' ') {
                if SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
                    found.push(token.trim().to_string());
                }
            }
        }
        found.retain(|v| v.len() >= MIN_LEN);
        found.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        found.dedup();
        Self { values: found }
    }

    /// True when there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret replaced by [`MASK`]; borrowed when it held none.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        for secret in &self.values {
            if text.contains(secret.as_str()) {
                text = Cow::Owned(text.replace(secret.as_str(), MASK));
            }
        }
        text
    }

    /// [`Secrets::scrub`] for an owned string.
    pub fn scrub_owned(&self, text: String) -> String {
        match self.scrub(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(clean) => clean,
        }
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.values.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_values_and_bare_tokens_longest_first() {
        let secrets = Secrets::new([
            "Bearer tok-123456",
            "AzureKey888",
            "abc",
            "  spaced-secret ",
        ]);
        let text = "got 'Bearer tok-123456' token=tok-123456 key AzureKey888 abc spaced-secret";
        assert_eq!(
            secrets.scrub(text),
            "got '***' token=*** key *** abc ***",
            "short values stay, the rest are masked"
        );
        assert!(matches!(secrets.scrub("nothing here"), Cow::Borrowed(_)));
        assert_eq!(format!("{secrets:?}"), "Secrets(4 redacted)");
        assert!(Secrets::new(["", "ab"]).is_empty());
        assert_eq!(
            Secrets::new(["token xyz-987"]).scrub_owned("xyz-987".into()),
            "***"
        );
    }
}
