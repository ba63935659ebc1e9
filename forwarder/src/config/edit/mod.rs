//! Runtime edits of the configuration file (`forwarder rules …`, `forwarder hosts …`).
//!
//! The file is the user's: an edit changes only the section it is about and keeps every
//! comment and all the layout around it. The result is written so that a crash, a full
//! disk or a power loss leaves either the old file or the new one, never a mix.
//!
//! Which comments leave with a removed section: the comment lines directly above its
//! header and directly below its last key, with no blank line in between. That is how a
//! section is annotated and where commented-out settings are kept. Comments set off by a
//! blank line describe a group of sections or the file, and stay, as does the comment at
//! the very top of the file:
//!
//! ```toml
//! # Names counted separately.      <- stays (a blank line follows)
//!
//! # The blog, on the second box.   <- removed with the section
//! [[host]]
//! name = "blog.example.com"
//! # policy = "drop"                <- removed with the section
//!
//! # vim: ft=toml                   <- stays
//! ```
//!
//! New sections go at the end of the file, after the last section's own trailing comments
//! and before the comments that end the file.
//!
//! The work is split by job: `rules`, `hosts` and `limits` are the edits each command
//! makes; `sections` adds, finds and removes sections in the document and `comments`
//! decides which comment lines go with them; `write` replaces the file.

mod comments;
mod hosts;
mod limits;
mod rules;
mod sections;
mod write;

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use toml_edit::DocumentMut;

use crate::config::file::{ConfigError, FileConfig, line_col};

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The file cannot be read, does not parse, or an edit would make it something the
    /// daemon cannot read (the same errors as at startup).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// What is to be added is there already.
    #[error("{0}")]
    Conflict(String),
    /// What is to be changed or removed is not there.
    #[error("{0}")]
    NotFound(String),
    /// Several sections match; the user has to say which one.
    #[error("{0}")]
    Ambiguous(String),
    /// `[limits]` is written as something other than a table (`limits = 5`).
    #[error("limits is not a [limits] section")]
    LimitsNotASection,
    /// The `n`th `[[key]]` section (from 1) the typed parse found is not in the document.
    #[error("[[{key}]] {n} is not in the file")]
    SectionMissing { key: &'static str, n: usize },
    /// `key` is written as something other than a list of sections (`rule = 5`).
    #[error("{key} in the file is not a list of [[{key}]] sections")]
    NotAList { key: &'static str },
    /// The file was not replaced.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file was replaced, but the replacement may not survive a power loss.
    #[error("wrote {path}, but cannot flush its directory: {source}")]
    Sync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The configuration file as the user wrote it, with the edits made so far.
///
/// Every edit leaves a document that [`FileConfig`] reads; one that would not is undone
/// and reported. Whether the result is a configuration the daemon can run with (addresses,
/// duplicates across rules, host names) is for [`crate::config::Config::resolve`] to say,
/// on [`ConfigDoc::file_config`], before [`ConfigDoc::write_atomic`].
#[derive(Clone, Debug)]
pub struct ConfigDoc {
    path: PathBuf,
    doc: DocumentMut,
    original: String,
}

impl ConfigDoc {
    pub fn open(path: &Path) -> Result<Self, EditError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// `path` is where [`ConfigDoc::write_atomic`] writes and what messages name.
    pub fn parse(path: &Path, text: &str) -> Result<Self, EditError> {
        // The typed parse first: its messages are the ones the daemon gives at startup,
        // and it makes sure `rule` and `host` are arrays whose entries line up with the
        // parsed rules and hosts, which is how the edits find a section.
        FileConfig::parse(path, text)?;
        let doc = text.parse::<DocumentMut>().map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim_end().to_owned(),
            }
        })?;
        Ok(ConfigDoc {
            path: path.to_owned(),
            doc,
            original: text.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The edited document as the daemon would read it from the file.
    pub fn file_config(&self) -> Result<FileConfig, ConfigError> {
        FileConfig::parse(&self.path, &self.text())
    }

    pub fn text(&self) -> String {
        self.doc.to_string()
    }

    /// Whether the text differs from what was read.
    pub fn changed(&self) -> bool {
        self.text() != self.original
    }

    /// Runs a change made of several edits; on an error none of them stays.
    fn all_or_nothing<T>(
        &mut self,
        change: impl FnOnce(&mut Self) -> Result<T, EditError>,
    ) -> Result<T, EditError> {
        let before = self.doc.clone();
        let result = change(self);
        if result.is_err() {
            self.doc = before;
        }
        result
    }

    /// Runs one edit; if it fails, or leaves a document the daemon could not read, the
    /// document is as before.
    fn edit<T>(
        &mut self,
        change: impl FnOnce(&mut DocumentMut) -> Result<T, EditError>,
    ) -> Result<T, EditError> {
        let before = self.doc.clone();
        let result = change(&mut self.doc).and_then(|v| {
            self.file_config()?;
            Ok(v)
        });
        if result.is_err() {
            self.doc = before;
        }
        result
    }
}

#[cfg(test)]
mod tests;
