//! The one query-string parser: `application/x-www-form-urlencoded` pairs,
//! percent-decoded (and `+` as a space) the way the web frameworks behind
//! rolegate decode them, so a parameter means the same to rolegate as to the
//! upstream (`tags%5B%5D=a` is a tag filter, `?to%6Ben=` names `token`).
//!
//! A parameter rolegate acts on that appears more than once is ambiguous:
//! frameworks disagree on which copy wins (first, last, or a list), so the
//! caller gets an error rather than rolegate guessing ([`Query::single`]).

use std::borrow::Cow;

/// A parameter appeared more than once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter `{0}` given more than once")]
pub struct Ambiguous(pub String);

#[derive(Debug, Clone, Copy)]
pub struct Query<'a>(&'a [u8]);

impl<'a> Query<'a> {
    pub fn new(query: Option<&'a str>) -> Self {
        Query(query.map_or(&[], str::as_bytes))
    }

    fn pairs(self) -> form_urlencoded::Parse<'a> {
        form_urlencoded::parse(self.0)
    }

    /// The value of `name` when it appears once with a non-empty value;
    /// `Ok(None)` when absent or empty; an error when it appears twice.
    pub fn single(self, name: &str) -> Result<Option<Cow<'a, str>>, Ambiguous> {
        let mut found = None;
        for (k, v) in self.pairs() {
            if k == name {
                if found.is_some() {
                    return Err(Ambiguous(name.to_owned()));
                }
                found = Some(v);
            }
        }
        Ok(found.filter(|v| !v.is_empty()))
    }

    /// Whether any of `names` appears at all, with or without a value.
    pub fn names_any(self, names: &[&str]) -> bool {
        self.pairs()
            .any(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n)))
    }

    /// Whether any of `names` appears with a non-empty value.
    pub fn has_value(self, names: &[&str]) -> bool {
        self.pairs()
            .any(|(k, v)| !v.is_empty() && names.iter().any(|n| k == *n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_percent_decoded_once() {
        let q = Query::new(Some("na%6De=a%20b+c&x=%2541"));
        assert_eq!(q.single("name").unwrap().as_deref(), Some("a b c"));
        // Decoded once: `%2541` is `%41`, not `A`.
        assert_eq!(q.single("x").unwrap().as_deref(), Some("%41"));
        assert_eq!(q.single("missing").unwrap(), None);
        assert_eq!(Query::new(Some("name=")).single("name").unwrap(), None);
        assert_eq!(Query::new(None).single("name").unwrap(), None);
    }

    #[test]
    fn a_repeated_parameter_is_ambiguous() {
        let q = Query::new(Some("role=nanoUser&role=nanoAdmin"));
        assert_eq!(q.single("role"), Err(Ambiguous("role".to_owned())));
        // Also when the second copy is spelled differently.
        let q = Query::new(Some("token=a&%74oken=b"));
        assert!(q.single("token").is_err());
    }

    #[test]
    fn encoded_names_match_their_decoded_form() {
        assert!(Query::new(Some("tags%5B%5D=a")).has_value(&["tags[]"]));
        assert!(Query::new(Some("tags[]=a")).has_value(&["tags[]"]));
        assert!(!Query::new(Some("tags[]=")).has_value(&["tags[]"]));
        assert!(!Query::new(Some("xtags=a")).has_value(&["tags"]));
    }
}
