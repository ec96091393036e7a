//! Loading a policy set from disk as one unit: schema files, policy files, the
//! route table and the role catalogue are read, parsed and strictly validated
//! together. Any problem is reported as `file:line:col: message` with Cedar's
//! own message and help; nothing partial is ever returned.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use cedar_policy::{
    Authorizer, EntityUid, PolicyId, PolicySet, Schema, SchemaFragment, ValidationMode, Validator,
};
use miette::Diagnostic;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::routes::RouteTable;
use super::{PolicySnapshot, RoleMeta};

pub const ROUTES_FILE: &str = "routes.toml";
pub const ROLES_FILE: &str = "roles.toml";

/// One problem found while loading, in Cedar's style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub help: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The files could not be read at all.
    #[error("cannot read `{path}`: {message}")]
    Io { path: String, message: String },
    /// The files were read and are invalid.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl LoadError {
    pub fn first_line(&self) -> String {
        match self {
            LoadError::Invalid(p) => p
                .first()
                .map(|p| format!("{}:{}:{}: {}", p.file, p.line, p.col, p.message))
                .unwrap_or_default(),
            other => other.to_string(),
        }
    }
}

/// Where a policy set lives.
#[derive(Debug, Clone)]
pub struct PolicySource {
    pub policies_dir: PathBuf,
    pub schema_dir: PathBuf,
}

/// A file's name and text.
struct SourceFile {
    name: String,
    text: String,
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// Turn a miette diagnostic about `file` into problems, one per label (or one without).
fn problems_of(file: &SourceFile, d: &dyn Diagnostic, message: String) -> Problem {
    let help = d.help().map(|h| h.to_string());
    let offset = d
        .labels()
        .and_then(|mut l| l.next())
        .map(|l| l.offset())
        .unwrap_or(0);
    let (line, col) = line_col(&file.text, offset);
    Problem {
        file: file.name.clone(),
        line,
        col,
        message,
        help,
    }
}

/// Names of the files with `ext` in `dir`, sorted, skipping hidden entries
/// (Kubernetes ConfigMap mounts hold `..data` links and timestamped `..`
/// directories).
fn input_names(dir: &Path, ext: &str) -> Result<Vec<String>, LoadError> {
    let io = io_error(dir);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(ext) {
            continue;
        }
        // Follow symlinks: ConfigMap files are links into the current data dir.
        if std::fs::metadata(entry.path())
            .map(|m| m.is_file())
            .unwrap_or(false)
        {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The files with `ext` in `dir` (see [`input_names`]), read.
fn read_dir_files(dir: &Path, ext: &str) -> Result<Vec<SourceFile>, LoadError> {
    input_names(dir, ext)?
        .into_iter()
        .map(|name| read_file(&dir.join(name)))
        .collect()
}

/// An I/O failure on `path`, as a load error naming it.
fn io_error(path: &Path) -> impl Fn(std::io::Error) -> LoadError + Copy + '_ {
    move |e| LoadError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn read_file(path: &Path) -> Result<SourceFile, LoadError> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    Ok(SourceFile {
        name: path.display().to_string(),
        text,
    })
}

/// The line of the `n`-th policy statement in a file (for problems Cedar reports without a span).
fn nth_policy_line(text: &str, n: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start();
            t.starts_with("permit") || t.starts_with("forbid")
        })
        .nth(n)
        .map(|(i, _)| i + 1)
        .unwrap_or(1)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoles {
    roles: BTreeMap<String, RoleMeta>,
}

/// The directory to read a whole set from. A Kubernetes ConfigMap mount swaps
/// `..data` (and a plain deployment may swap the directory symlink itself) to
/// publish a new set atomically; resolving the link once per load means every
/// file of one load comes from the same set, never half old and half new.
fn pinned(dir: &Path) -> PathBuf {
    let data = dir.join("..data");
    let link = if data.exists() {
        data
    } else if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        dir.to_path_buf()
    } else {
        return dir.to_path_buf();
    };
    std::fs::canonicalize(&link).unwrap_or_else(|_| dir.to_path_buf())
}

fn pinned_source(source: &PolicySource) -> PolicySource {
    PolicySource {
        policies_dir: pinned(&source.policies_dir),
        schema_dir: pinned(&source.schema_dir),
    }
}

/// The inputs the digest covers: schema files, policy files, the route
/// table and the role catalogue.
fn inputs(source: &PolicySource) -> [(&Path, &'static str); 3] {
    [
        (&source.schema_dir, ".cedarschema"),
        (&source.policies_dir, ".cedar"),
        (&source.policies_dir, ".toml"),
    ]
}

/// Digest of every input, so `/status` can show which set is live and a
/// poller can tell when the files changed.
pub fn digest(source: &PolicySource) -> Result<String, LoadError> {
    let source = &pinned_source(source);
    let mut files = Vec::new();
    for (dir, ext) in inputs(source) {
        files.extend(read_dir_files(dir, ext)?);
    }
    Ok(digest_of(&files))
}

/// A file written less than this long ago may be written again without its
/// timestamps moving: file systems keep them at a coarse granularity (a clock
/// tick on Linux, seconds on some network and older file systems).
const RACY_WINDOW: Duration = Duration::from_secs(3);

/// What the inputs' metadata says, taken without opening or reading a file,
/// so the once-a-second poll costs a few `stat`s while nothing changes
/// (reading every file also woke the file watcher's thread with access events).
/// Equal fingerprints mean unchanged files only when [`Fingerprint::settled`]:
/// a file written within `RACY_WINDOW` can change again with the same size
/// and timestamps, so an unsettled fingerprint proves nothing.
#[derive(Debug, PartialEq, Eq)]
pub struct Fingerprint {
    files: Vec<FileStamp>,
    settled: bool,
}

#[derive(Debug, PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    /// (device, inode, ctime s, ctime ns): the inode changes when a file is
    /// replaced by a rename, and ctime moves on every write, even one whose
    /// author set mtime back.
    #[cfg(unix)]
    identity: (u64, u64, i64, i64),
}

impl Fingerprint {
    pub fn settled(&self) -> bool {
        self.settled
    }
}

pub fn fingerprint(source: &PolicySource) -> Result<Fingerprint, LoadError> {
    fingerprint_as_of(source, SystemTime::now())
}

/// [`fingerprint`] as if the clock read `now` (tests age files this way:
/// a file's ctime cannot be set back).
fn fingerprint_as_of(source: &PolicySource, now: SystemTime) -> Result<Fingerprint, LoadError> {
    let source = &pinned_source(source);
    let settled_before = now
        .checked_sub(RACY_WINDOW)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut files = Vec::new();
    let mut settled = true;
    for (dir, ext) in inputs(source) {
        for name in input_names(dir, ext)? {
            let path = dir.join(name);
            let meta = std::fs::metadata(&path).map_err(io_error(&path))?;
            let modified = meta.modified().ok();
            #[cfg(unix)]
            let identity = {
                use std::os::unix::fs::MetadataExt;
                (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
            };
            #[cfg(unix)]
            let changed = SystemTime::UNIX_EPOCH
                .checked_add(Duration::new(
                    u64::try_from(identity.2).unwrap_or(u64::MAX),
                    u32::try_from(identity.3).unwrap_or(0),
                ))
                .max(modified);
            #[cfg(not(unix))]
            let changed = modified;
            // Unknown or recent (or future) timestamps: not settled.
            settled &= changed.is_some_and(|t| t < settled_before);
            files.push(FileStamp {
                path,
                len: meta.len(),
                modified,
                #[cfg(unix)]
                identity,
            });
        }
    }
    Ok(Fingerprint { files, settled })
}

fn digest_of(files: &[SourceFile]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.name.as_bytes());
        h.update([0]);
        h.update(f.text.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// Load and validate a whole policy set.
pub fn load(source: &PolicySource, version: u64) -> Result<PolicySnapshot, LoadError> {
    let source = &pinned_source(source);
    let schema_files = read_dir_files(&source.schema_dir, ".cedarschema")?;
    let policy_files = read_dir_files(&source.policies_dir, ".cedar")?;
    let routes_file = read_file(&source.policies_dir.join(ROUTES_FILE))?;
    let roles_file = read_file(&source.policies_dir.join(ROLES_FILE))?;
    let mut problems = Vec::new();

    if schema_files.is_empty() {
        problems.push(Problem {
            file: source.schema_dir.display().to_string(),
            line: 1,
            col: 1,
            message: "no `.cedarschema` file".to_owned(),
            help: None,
        });
    }

    // Schema: every fragment parsed separately so errors name their file.
    let mut fragments = Vec::new();
    for f in &schema_files {
        match SchemaFragment::from_cedarschema_str(&f.text) {
            Ok((frag, _warnings)) => fragments.push(frag),
            Err(e) => problems.push(problems_of(f, &e, e.to_string())),
        }
    }
    let schema = if problems.is_empty() {
        match Schema::from_schema_fragments(fragments) {
            Ok(s) => Some(s),
            Err(e) => {
                let file = schema_files
                    .first()
                    .map(|f| f.name.clone())
                    .unwrap_or_default();
                problems.push(Problem {
                    file,
                    line: 1,
                    col: 1,
                    message: e.to_string(),
                    help: e.help().map(|h| h.to_string()),
                });
                None
            }
        }
    } else {
        None
    };

    // Policies: ids come from `@id`, unique across files.
    let mut set = PolicySet::new();
    let mut file_of: HashMap<PolicyId, usize> = HashMap::new();
    for (fi, f) in policy_files.iter().enumerate() {
        let parsed = match PolicySet::from_str(&f.text) {
            Ok(p) => p,
            Err(e) => {
                for pe in e.iter() {
                    problems.push(problems_of(f, pe, pe.to_string()));
                }
                continue;
            }
        };
        // `from_str` numbers policies policy0, policy1, … in file order.
        let mut policies: Vec<_> = parsed.policies().collect();
        policies.sort_by_key(|p| {
            p.id()
                .to_string()
                .trim_start_matches("policy")
                .parse::<usize>()
                .unwrap_or(0)
        });
        for (n, p) in policies.into_iter().enumerate() {
            let line = nth_policy_line(&f.text, n);
            let Some(id) = p.annotation("id") else {
                problems.push(Problem {
                    file: f.name.clone(),
                    line,
                    col: 1,
                    message: "policy has no `@id` annotation".to_owned(),
                    help: Some(
                        "give every policy a unique `@id(\"...\")` so logs and tests can name it"
                            .to_owned(),
                    ),
                });
                continue;
            };
            let pid = PolicyId::new(id);
            if let Some(&other) = file_of.get(&pid) {
                problems.push(Problem {
                    file: f.name.clone(),
                    line,
                    col: 1,
                    message: format!(
                        "policy id `{id}` is already used in `{}`",
                        policy_files[other].name
                    ),
                    help: None,
                });
                continue;
            }
            if let Err(e) = set.add(p.new_id(pid.clone())) {
                problems.push(Problem {
                    file: f.name.clone(),
                    line,
                    col: 1,
                    message: e.to_string(),
                    help: None,
                });
                continue;
            }
            file_of.insert(pid, fi);
        }
    }

    // Strict validation against the schema.
    if let Some(schema) = &schema {
        let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        for e in result.validation_errors() {
            let file = file_of
                .get(e.policy_id())
                .map(|&i| &policy_files[i])
                .unwrap_or(&routes_file);
            problems.push(problems_of(file, e, e.to_string()));
        }
    }

    // Route table and roles, checked against the schema.
    let routes = match RouteTable::parse(&routes_file.name, &routes_file.text) {
        Ok(r) => Some(r),
        Err(e) => {
            problems.push(Problem {
                file: e.file,
                line: e.line,
                col: e.column,
                message: e.message,
                help: None,
            });
            None
        }
    };
    let roles = match toml::from_str::<RawRoles>(&roles_file.text) {
        Ok(r) => Some(r.roles),
        Err(e) => {
            let (line, col) = line_col(&roles_file.text, e.span().map(|s| s.start).unwrap_or(0));
            problems.push(Problem {
                file: roles_file.name.clone(),
                line,
                col,
                message: e.message().to_owned(),
                help: None,
            });
            None
        }
    };
    if let (Some(schema), Some(routes)) = (&schema, &routes) {
        check_routes(schema, routes, &routes_file, &schema_files, &mut problems);
    }
    if let Some(roles) = &roles {
        for name in roles.keys() {
            let file = source.policies_dir.join(format!("{name}.cedar"));
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid_name || !file.is_file() {
                let (line, col) = roles_file
                    .text
                    .find(&format!("[roles.{name}]"))
                    .map(|o| line_col(&roles_file.text, o))
                    .unwrap_or((1, 1));
                problems.push(Problem {
                    file: roles_file.name.clone(),
                    line,
                    col,
                    message: format!("role `{name}` has no policy file `{name}.cedar`"),
                    help: Some(
                        "a role is an entry here plus the policy file that grants its capabilities"
                            .to_owned(),
                    ),
                });
            }
        }
    }

    if !problems.is_empty() {
        return Err(LoadError::Invalid(problems));
    }
    let (Some(schema), Some(routes), Some(roles)) = (schema, routes, roles) else {
        return Err(LoadError::Invalid(vec![]));
    };
    // Same inputs, same order as `digest()`: schema, policies, then the TOML files by name.
    let mut all = schema_files;
    all.extend(policy_files);
    let mut tomls = vec![routes_file, roles_file];
    tomls.sort_by(|a, b| a.name.cmp(&b.name));
    all.extend(tomls);
    Ok(PolicySnapshot::new(
        set,
        schema,
        routes,
        roles,
        version,
        digest_of(&all),
        Authorizer::new(),
    ))
}

/// Every route must name an action of the schema whose resource types include
/// the route's resource type, and every action must be reachable by a route
/// or listed in `[unrouted]`.
fn check_routes(
    schema: &Schema,
    routes: &RouteTable,
    file: &SourceFile,
    schema_files: &[SourceFile],
    problems: &mut Vec<Problem>,
) {
    let actions: HashMap<String, EntityUid> = schema
        .actions()
        .map(|a| (a.id().unescaped().to_owned(), a.clone()))
        .collect();
    let groups: Vec<String> = schema
        .action_groups()
        .map(|a| a.id().unescaped().to_owned())
        .collect();
    let line_of = |index: usize| {
        file.text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim_start().starts_with("[[route]]"))
            .nth(index)
            .map(|(i, _)| i + 1)
            .unwrap_or(1)
    };
    for r in routes.routes() {
        let line = line_of(r.index);
        let Some(uid) = actions.get(&r.action) else {
            problems.push(Problem {
                file: file.name.clone(),
                line,
                col: 1,
                message: format!(
                    "route `{} {}` names unknown action `{}`",
                    r.method, r.template, r.action
                ),
                help: Some("actions are declared in the schema".to_owned()),
            });
            continue;
        };
        if groups.contains(&r.action) {
            problems.push(Problem {
                file: file.name.clone(),
                line,
                col: 1,
                message: format!(
                    "route `{} {}` names action group `{}`",
                    r.method, r.template, r.action
                ),
                help: Some("a route names one action, not a group".to_owned()),
            });
        }
        let ok = schema
            .resources_for_action(uid)
            .map(|mut ts| ts.any(|t| t.to_string() == r.resource_type))
            .unwrap_or(false);
        if !ok {
            problems.push(Problem {
                file: file.name.clone(),
                line,
                col: 1,
                message: format!(
                    "route `{} {}`: action `{}` does not apply to resource type `{}`",
                    r.method, r.template, r.action, r.resource_type
                ),
                help: Some("check the action's `appliesTo` resource list in the schema".to_owned()),
            });
        }
    }
    for name in actions.keys() {
        if groups.contains(name) {
            continue;
        }
        let routed = routes.routes().iter().any(|r| &r.action == name);
        if !routed && !routes.unrouted.contains_key(name) {
            // The fix is a route or an `[unrouted]` entry, but the action is what
            // the author just added: point at its declaration in the schema.
            let (decl_file, line, col) = schema_files
                .iter()
                .find_map(|f| {
                    action_decl_offset(&f.text, name).map(|o| {
                        let (line, col) = line_col(&f.text, o);
                        (f.name.clone(), line, col)
                    })
                })
                .unwrap_or_else(|| (file.name.clone(), 1, 1));
            problems.push(Problem {
                file: decl_file,
                line,
                col,
                message: format!("action `{name}` is reachable by no route"),
                help: Some(
                    "add a route for it, or list it under `[unrouted]` with the reason".to_owned(),
                ),
            });
        }
    }
    for name in routes.unrouted.keys() {
        if !actions.contains_key(name) {
            problems.push(Problem {
                file: file.name.clone(),
                line: 1,
                col: 1,
                message: format!("`[unrouted]` names unknown action `{name}`"),
                help: None,
            });
        }
    }
}

/// A token of the Cedar schema syntax, as far as finding declarations needs.
#[derive(Debug, PartialEq, Eq)]
enum SchemaToken<'a> {
    /// An identifier or keyword (`::` paths included).
    Word(&'a str),
    /// The contents of a string literal (escapes left as written).
    Str(&'a str),
    Punct(char),
}

/// Tokens of a schema text with their byte offsets; comments are skipped.
fn schema_tokens(text: &str) -> Vec<(usize, SchemaToken<'_>)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
        } else if text[i..].starts_with("//") {
            i = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
        } else if b == b'"' {
            let start = i + 1;
            let mut j = start;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            let end = j.min(bytes.len());
            out.push((i, SchemaToken::Str(&text[start..end])));
            i = end + 1;
        } else if b.is_ascii_alphanumeric() || b == b'_' || b == b':' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            out.push((start, SchemaToken::Word(&text[start..i])));
        } else {
            let c = text[i..].chars().next().unwrap_or(' ');
            out.push((i, SchemaToken::Punct(c)));
            i += c.len_utf8();
        }
    }
    out
}

/// The byte offset of `name` in the `action` declaration that declares it
/// (`action a, b, "c" in [...] appliesTo {...};`), if the text has one.
fn action_decl_offset(text: &str, name: &str) -> Option<usize> {
    let tokens = schema_tokens(text);
    let mut statement_start = true;
    let mut k = 0;
    while k < tokens.len() {
        let (_, tok) = &tokens[k];
        if statement_start && *tok == SchemaToken::Word("action") {
            // The declared names: a comma-separated list of identifiers or strings.
            k += 1;
            while let Some((offset, t)) = tokens.get(k) {
                let declared = match t {
                    SchemaToken::Word(w) | SchemaToken::Str(w) => *w,
                    SchemaToken::Punct(_) => break,
                };
                if declared == name {
                    return Some(*offset);
                }
                if tokens.get(k + 1).map(|t| &t.1) == Some(&SchemaToken::Punct(',')) {
                    k += 2;
                } else {
                    break;
                }
            }
            statement_start = false;
            continue;
        }
        statement_start = matches!(
            tok,
            SchemaToken::Punct(';') | SchemaToken::Punct('{') | SchemaToken::Punct('}')
        );
        k += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::action_decl_offset;
    use super::{fingerprint_as_of, PolicySource};
    use std::time::{Duration, SystemTime};

    #[test]
    fn the_poll_fingerprint_moves_with_every_write_and_is_unsettled_while_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let source = PolicySource {
            policies_dir: dir.path().join("policies"),
            schema_dir: dir.path().join("schema"),
        };
        std::fs::create_dir(&source.policies_dir).unwrap();
        std::fs::create_dir(&source.schema_dir).unwrap();
        let policy = source.policies_dir.join("a.cedar");
        std::fs::write(&policy, "permit (principal, action, resource);\n").unwrap();
        std::fs::write(source.policies_dir.join("routes.toml"), "").unwrap();
        std::fs::write(source.schema_dir.join("s.cedarschema"), "").unwrap();
        let now = SystemTime::now();
        let later = now + Duration::from_secs(60);
        let at = |t| fingerprint_as_of(&source, t).unwrap();

        assert!(!at(now).settled(), "files written just now prove nothing");
        let before = at(later);
        assert!(before.settled());
        assert_eq!(at(later), before, "nothing written: equal");

        // Files the loader ignores do not count.
        std::fs::write(source.policies_dir.join("README.md"), "notes").unwrap();
        std::fs::write(source.policies_dir.join(".a.cedar.swp"), "x").unwrap();
        assert_eq!(at(later), before);

        // Same length, and the old mtime put back: ctime still moves.
        let mtime = std::fs::metadata(&policy).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&policy, "forbid (principal, action, resource);\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&policy)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let rewritten = at(later);
        assert_ne!(rewritten, before);

        // A new input file, then its removal.
        std::fs::write(source.policies_dir.join("b.cedar"), "").unwrap();
        assert_ne!(at(later), rewritten);
        std::fs::remove_file(source.policies_dir.join("b.cedar")).unwrap();
        assert_eq!(at(later), rewritten);
    }

    #[test]
    fn finds_an_action_in_a_multi_name_declaration() {
        let text = "// action ghost;\nentity A { action: String };\naction a, b in [g]\n  appliesTo { principal: [A], resource: [A] };\naction c,\n       \"d e\";\n";
        let at = |n: &str| action_decl_offset(text, n).map(|o| super::line_col(text, o));
        assert_eq!(at("a"), Some((3, 8)));
        assert_eq!(at("b"), Some((3, 11)));
        assert_eq!(at("d e"), Some((6, 8)));
        assert_eq!(at("ghost"), None);
        assert_eq!(at("g"), None);
        assert_eq!(at("String"), None);
    }
}
