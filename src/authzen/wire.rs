//! The AuthZEN 1.0 messages as they travel (JSON over HTTP): the Access
//! Evaluation and Access Evaluations requests, and the decisions answered.
//!
//! Unknown members are ignored (the specification's forward-compatibility
//! rule). A required member missing or of the wrong type is a [`WireError`]:
//! for the whole request that is a 400; inside a batch only that evaluation
//! fails (`decision: false`), as the specification's certification scenario
//! reads `execute_all`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Most evaluations one batch may carry; the body limit bounds them too,
/// this bounds the work a single request can ask for.
pub const MAX_EVALUATIONS: usize = 1024;

/// Why a message is not a valid AuthZEN request.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("Body is not a JSON object")]
    NotAnObject,
    #[error("Body is not valid JSON")]
    Syntax,
    /// A member the request needs is absent (named in the message).
    #[error("Request is missing `{0}`")]
    Missing(String),
    /// serde's own words for a missing member (`missing field `type``).
    #[error("Invalid request: {0}")]
    Shape(String),
    /// A member has the wrong type or value. serde's message would quote the
    /// value, which may be a credential: only the position is given.
    #[error(
        "Invalid request: a member has the wrong type or value (line {line}, column {column})"
    )]
    Type { line: usize, column: usize },
    #[error("At most {MAX_EVALUATIONS} evaluations per request")]
    TooMany,
}

impl WireError {
    fn from_serde(e: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => WireError::Syntax,
            Category::Data => {
                let text = e.to_string();
                match text.strip_prefix("missing field ") {
                    Some(rest) => {
                        let field = rest.split(" at line").next().unwrap_or(rest);
                        WireError::Shape(format!("missing field {field}"))
                    }
                    None => WireError::Type {
                        line: e.line(),
                        column: e.column(),
                    },
                }
            }
        }
    }
}

/// An entity of the information model: a Subject or a Resource.
#[derive(Debug, Clone, Deserialize)]
pub struct Entity {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(default)]
    pub properties: Option<Map<String, Value>>,
}

impl Entity {
    /// A property, if present and not null.
    pub fn property(&self, name: &str) -> Option<&Value> {
        self.properties
            .as_ref()
            .and_then(|p| p.get(name))
            .filter(|v| !v.is_null())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Action {
    pub name: String,
    #[serde(default)]
    pub properties: Option<Map<String, Value>>,
}

/// One evaluation, complete: what a decision is asked about.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub subject: Entity,
    pub action: Action,
    pub resource: Entity,
    pub context: Map<String, Value>,
}

impl Evaluation {
    /// A context member, if present and not null.
    pub fn context(&self, name: &str) -> Option<&Value> {
        self.context.get(name).filter(|v| !v.is_null())
    }
}

/// The four members of an evaluation, each optional: a request's top level
/// (the defaults) or one object of its `evaluations` array.
#[derive(Debug, Clone, Default, Deserialize)]
struct Parts {
    #[serde(default)]
    subject: Option<Entity>,
    #[serde(default)]
    action: Option<Action>,
    #[serde(default)]
    resource: Option<Entity>,
    #[serde(default)]
    context: Option<Map<String, Value>>,
}

impl Parts {
    /// The evaluation these parts make over `defaults`: each member given
    /// here replaces the default whole (no merging inside a member).
    fn complete(self, defaults: &Parts) -> Result<Evaluation, WireError> {
        let missing = |m: &str| WireError::Missing(m.to_owned());
        Ok(Evaluation {
            subject: self
                .subject
                .or_else(|| defaults.subject.clone())
                .ok_or_else(|| missing("subject"))?,
            action: self
                .action
                .or_else(|| defaults.action.clone())
                .ok_or_else(|| missing("action"))?,
            resource: self
                .resource
                .or_else(|| defaults.resource.clone())
                .ok_or_else(|| missing("resource"))?,
            context: self
                .context
                .or_else(|| defaults.context.clone())
                .unwrap_or_default(),
        })
    }
}

/// How a batch is evaluated (`options.evaluations_semantic`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Semantic {
    /// Every evaluation, every result (the default).
    #[default]
    ExecuteAll,
    /// Stop after the first deny (or failure), like `&&`.
    DenyOnFirstDeny,
    /// Stop after the first permit, like `||`.
    PermitOnFirstPermit,
}

#[derive(Debug, Default, Deserialize)]
struct Options {
    #[serde(default)]
    evaluations_semantic: Option<Semantic>,
}

#[derive(Deserialize)]
struct BatchBody {
    #[serde(flatten)]
    defaults: Parts,
    /// Kept as raw values: a malformed item fails alone, not the batch.
    #[serde(default)]
    evaluations: Option<Vec<Value>>,
    #[serde(default)]
    options: Option<Options>,
}

/// An Access Evaluations request.
pub enum Batch {
    /// No (or an empty) `evaluations` array: the single-evaluation request
    /// it is compatible with, answered as one.
    Single(Box<Evaluation>),
    /// One entry per requested evaluation, in order: the evaluation, or why
    /// that item is not one.
    Many {
        items: Vec<Result<Evaluation, WireError>>,
        semantic: Semantic,
    },
}

/// The top level must be an object (serde would read an array positionally).
fn object_body(bytes: &[u8]) -> Result<(), WireError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        Some(_) => Err(WireError::NotAnObject),
        None => Err(WireError::Syntax),
    }
}

/// Parse an Access Evaluation request.
pub fn single(bytes: &[u8]) -> Result<Evaluation, WireError> {
    object_body(bytes)?;
    let parts: Parts = serde_json::from_slice(bytes).map_err(|e| WireError::from_serde(&e))?;
    parts.complete(&Parts::default())
}

/// Parse an Access Evaluations request.
pub fn batch(bytes: &[u8]) -> Result<Batch, WireError> {
    object_body(bytes)?;
    let body: BatchBody = serde_json::from_slice(bytes).map_err(|e| WireError::from_serde(&e))?;
    let semantic = body
        .options
        .and_then(|o| o.evaluations_semantic)
        .unwrap_or_default();
    let items = body.evaluations.unwrap_or_default();
    if items.is_empty() {
        return Ok(Batch::Single(Box::new(
            body.defaults.complete(&Parts::default())?,
        )));
    }
    if items.len() > MAX_EVALUATIONS {
        return Err(WireError::TooMany);
    }
    let items = items
        .into_iter()
        .map(|item| {
            if !item.is_object() {
                return Err(WireError::NotAnObject);
            }
            let parts: Parts =
                serde_json::from_value(item).map_err(|e| WireError::from_serde(&e))?;
            parts.complete(&body.defaults)
        })
        .collect();
    Ok(Batch::Many { items, semantic })
}

/// A Decision: `decision`, and a `context` object when there is something to say.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub decision: bool,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub context: Map<String, Value>,
}

/// The Access Evaluations response: one decision per evaluation made, in order.
#[derive(Debug, Serialize)]
pub struct Decisions {
    pub evaluations: Vec<Decision>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn required_members_and_their_types() {
        let ok = br#"{"subject":{"type":"user","id":"a"},"action":{"name":"getStream"},"resource":{"type":"Stream","id":"s"},"extra":1}"#;
        assert_eq!(single(ok).unwrap().subject.id, "a");
        for bad in [
            &br#"{"action":{"name":"r"},"resource":{"type":"t","id":"i"}}"#[..],
            br#"{"subject":{"id":"a"},"action":{"name":"r"},"resource":{"type":"t","id":"i"}}"#,
            br#"{"subject":{"type":"user","id":"a"},"action":{},"resource":{"type":"t","id":"i"}}"#,
            br#"{"subject":"alice","action":{"name":"r"},"resource":{"type":"t","id":"i"}}"#,
            br#"{"subject":{"type":"user","id":"a"},"action":{"name":123},"resource":{"type":"t","id":"i"}}"#,
            br#"{"subject":{"type":"user","id":"a","id":"b"},"action":{"name":"r"},"resource":{"type":"t","id":"i"}}"#,
            b"[]",
            b"",
            b"{",
        ] {
            assert!(single(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_wrongly_typed_member_is_not_quoted_back() {
        let e = single(br#"{"subject":{"type":"token","id":["secret-token-value"]},"action":{"name":"GET"},"resource":{"type":"route","id":"/"}}"#).unwrap_err();
        assert!(!e.to_string().contains("secret-token-value"), "{e}");
    }

    #[test]
    fn batch_defaults_replace_whole_members_and_bad_items_fail_alone() {
        let b = batch(br#"{"subject":{"type":"user","id":"a"},"action":{"name":"r"},"context":{"t":1},
            "evaluations":[{"resource":{"type":"t","id":"1"}},{"resource":{"type":"t","id":"2"},"context":{"u":2}},{},7],
            "options":{"evaluations_semantic":"deny_on_first_deny","other":true}}"#)
        .unwrap();
        let Batch::Many { items, semantic } = b else {
            panic!("not a batch")
        };
        assert_eq!(semantic, Semantic::DenyOnFirstDeny);
        assert_eq!(items.len(), 4);
        let first = items[0].as_ref().unwrap();
        assert_eq!(first.context.get("t"), Some(&Value::from(1)));
        let second = items[1].as_ref().unwrap();
        assert!(second.context.get("t").is_none());
        assert!(matches!(items[2], Err(WireError::Missing(_))));
        assert!(matches!(items[3], Err(WireError::NotAnObject)));
        // An empty array is the single request.
        let one = batch(br#"{"subject":{"type":"user","id":"a"},"action":{"name":"r"},"resource":{"type":"t","id":"1"},"evaluations":[]}"#).unwrap();
        assert!(matches!(one, Batch::Single(_)));
        // An unknown semantic is a bad request.
        assert!(
            batch(br#"{"evaluations":[{}],"options":{"evaluations_semantic":"first"}}"#).is_err()
        );
    }
}
