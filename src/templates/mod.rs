//! Email templates in Handlebars, strict mode: a variable the data lacks is an error, not
//! an empty string. HTML bodies are HTML-escaped; subjects and text bodies are not.
//!
//! A template has a subject, an HTML body and an optional text body (derived from the HTML
//! when absent), per locale. Templates named `_something` are partials (`{{> _footer}}`);
//! the template named `layout` wraps every HTML (and text) body, which it places with
//! `{{{body}}}`. The built-in templates under `templates/` are compiled into the binary; a
//! tenant's own template of the same name replaces the built-in one in every locale.
//!
//! Each tenant's templates are compiled once into a [`Registry`] and kept until the
//! tenant's template revision in the store moves, which is checked at most once a second
//! (and at once by the process that made the change).
//!
//! The module is its own, not email's, because the API checks and previews templates too:
//! [`builtin`] holds the built-in set, [`registry`] compiles and renders a set, [`cache`]
//! keeps each tenant's compiled set, [`limits`] bounds a render, [`cycles`] refuses
//! partials that include each other and [`plain_text`] derives a text body from HTML.

mod builtin;
mod cache;
mod cycles;
mod limits;
mod plain_text;
mod registry;
#[cfg(test)]
mod tests;

pub use cache::Templates;
pub use limits::{RenderLimit, RenderLimits};
pub use registry::Registry;

use crate::store::{NewTemplate, StoreError};
use handlebars::{Template, TemplateError};

/// The name of the template that wraps every body.
pub const LAYOUT: &str = "layout";

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject, on one line.
    pub subject: String,
    /// The HTML body.
    pub html: String,
    /// The plain-text body.
    pub text: String,
}

/// Why a template could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// No template has this name.
    #[error("no template named '{0}'")]
    Unknown(String),
    /// The template has no subject and the event gave none.
    #[error("template '{0}' has no subject and the event gives none")]
    NoSubject(String),
    /// The data does not fit the template (a missing variable, in strict mode).
    #[error("rendering '{name}': {cause}")]
    Render {
        /// The template.
        name: String,
        /// Handlebars' message, with line and column.
        cause: String,
    },
    /// The render stopped at one of its limits: the template and data make too much.
    #[error("rendering '{name}' stopped: it exceeds {limit}")]
    Limit {
        /// The template.
        name: String,
        /// The limit it reached.
        limit: RenderLimit,
    },
    /// Partials include each other, which would recurse until the stack overflows.
    #[error("{0}")]
    PartialCycle(String),
    /// The tenant's templates could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A part of a template that does not compile: which part, and why, with line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// `subject`, `html` or `text`.
    pub part: &'static str,
    /// The line, from 1.
    pub line: Option<usize>,
    /// The column, from 1.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl CompileError {
    fn new(part: &'static str, e: &TemplateError) -> Self {
        let (line, column) = e.pos().unzip();
        // Handlebars' syntax errors come from pest, several lines long with a picture of
        // the spot; the last line says what was expected.
        let reason = e.reason().to_string();
        let message = reason
            .lines()
            .rev()
            .map(|l| l.trim().trim_start_matches("= ").trim())
            .find(|l| !l.is_empty())
            .unwrap_or("invalid template")
            .to_owned();
        CompileError {
            part,
            line,
            column,
            message,
        }
    }
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                write!(f, "line {line}, column {column}: {}", self.message)
            }
            _ => f.write_str(&self.message),
        }
    }
}

/// Compiles each part of `template`; answers every part that does not compile.
pub fn check(template: &NewTemplate) -> Result<(), Vec<CompileError>> {
    let parts = [
        ("subject", template.subject.as_deref()),
        ("html", Some(template.html.as_str())),
        ("text", template.text.as_deref()),
    ];
    let errors: Vec<_> = parts
        .into_iter()
        .filter_map(|(part, source)| {
            Template::compile(source?)
                .err()
                .map(|e| CompileError::new(part, &e))
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The locales to try for `locale`, most specific first: `fr-ca`, `fr`, then the default.
pub fn locale_chain(locale: Option<&str>) -> Vec<String> {
    let mut chain = Vec::new();
    if let Some(locale) = locale.map(str::to_ascii_lowercase) {
        let mut current = locale.as_str();
        while !current.is_empty() {
            chain.push(current.to_owned());
            current = current.rsplit_once('-').map_or("", |(head, _)| head);
        }
    }
    chain.push(String::new());
    chain
}
