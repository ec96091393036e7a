//! `rolegate fmt`: format every `*.cedar` policy file with Cedar's own
//! formatter, so reviews see policy changes and not whitespace.

use std::path::{Path, PathBuf};

use cedar_policy_formatter::{policies_str_to_pretty, Config};

/// The one formatting style of the repository (Cedar's defaults, spelled out so
/// a change of the crate's defaults cannot reformat every file at once).
pub const LINE_WIDTH: usize = 80;
pub const INDENT_WIDTH: isize = 2;

#[derive(Debug, thiserror::Error)]
pub enum FmtError {
    #[error("cannot read `{path}`: {message}")]
    Io { path: String, message: String },
    #[error("{path}: cannot format: {message}")]
    Format { path: String, message: String },
}

/// A file whose formatted text differs from what is on disk.
#[derive(Debug, Clone)]
pub struct Changed {
    pub path: PathBuf,
    pub formatted: String,
}

fn io(path: &Path, e: std::io::Error) -> FmtError {
    FmtError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Format one policy text.
pub fn format_text(path: &Path, text: &str) -> Result<String, FmtError> {
    let config = Config {
        line_width: LINE_WIDTH,
        indent_width: INDENT_WIDTH,
    };
    let mut out = policies_str_to_pretty(text, &config).map_err(|e| FmtError::Format {
        path: path.display().to_string(),
        // `{:#}` keeps miette's cause chain on one line.
        message: format!("{e:#}"),
    })?;
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// The `*.cedar` files of a directory, sorted (hidden entries skipped, as the loader does).
pub fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, FmtError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".cedar") {
            continue;
        }
        files.push(entry.path());
    }
    files.sort();
    Ok(files)
}

/// Every file of `dir` that formatting would change, with its formatted text.
pub fn unformatted(dir: &Path) -> Result<Vec<Changed>, FmtError> {
    let mut changed = Vec::new();
    for path in policy_files(dir)? {
        let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        let formatted = format_text(&path, &text)?;
        if formatted != text {
            changed.push(Changed { path, formatted });
        }
    }
    Ok(changed)
}

/// Write the formatted text of every changed file; returns what was rewritten.
pub fn write(changed: &[Changed]) -> Result<(), FmtError> {
    for c in changed {
        // Write beside and rename, so a watcher never loads a half-written file.
        let tmp = c.path.with_extension("cedar.fmt-tmp");
        std::fs::write(&tmp, &c.formatted).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &c.path).map_err(|e| io(&c.path, e))?;
    }
    Ok(())
}
