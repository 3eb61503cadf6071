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

use super::plain_text;
use crate::domain::TenantId;
use crate::store::{NewTemplate, RenderedFrom, Store, StoreError, StoredTemplate};
use handlebars::{Context, Handlebars, Template, TemplateError};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A built-in template: name, locale, subject, HTML, text.
type BuiltIn = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    Option<&'static str>,
);

macro_rules! built_in {
    ($name:literal, $dir:literal) => {
        (
            $name,
            "",
            Some(include_str!(concat!(
                "../../../templates/",
                $dir,
                "/subject.hbs"
            ))),
            include_str!(concat!("../../../templates/", $dir, "/html.hbs")),
            Some(include_str!(concat!(
                "../../../templates/",
                $dir,
                "/text.hbs"
            ))),
        )
    };
    ($name:literal, $dir:literal, $locale:literal) => {
        (
            $name,
            $locale,
            Some(include_str!(concat!(
                "../../../templates/",
                $dir,
                "/",
                $locale,
                "/subject.hbs"
            ))),
            include_str!(concat!(
                "../../../templates/",
                $dir,
                "/",
                $locale,
                "/html.hbs"
            )),
            Some(include_str!(concat!(
                "../../../templates/",
                $dir,
                "/",
                $locale,
                "/text.hbs"
            ))),
        )
    };
}

/// The templates under `templates/`.
const BUILT_IN: [BuiltIn; 6] = [
    (
        LAYOUT,
        "",
        None,
        include_str!("../../../templates/layout/html.hbs"),
        Some(include_str!("../../../templates/layout/text.hbs")),
    ),
    (
        "_footer",
        "",
        None,
        include_str!("../../../templates/_footer/html.hbs"),
        Some(include_str!("../../../templates/_footer/text.hbs")),
    ),
    built_in!("welcome", "welcome"),
    built_in!("welcome", "welcome", "fr"),
    built_in!("notification", "notification"),
    built_in!("password-reset", "password-reset"),
];

/// The name of the template that wraps every body.
pub const LAYOUT: &str = "layout";

/// How long a compiled tenant registry is used before its revision is checked again.
const REVISION_CHECK: Duration = Duration::from_secs(1);

/// Tenants whose compiled templates are kept; beyond it, those unused longest are dropped.
const CACHED_TENANTS: usize = 1024;

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

/// What a registry knows of one (name, locale).
#[derive(Debug, Clone, Copy)]
struct Entry {
    version: Option<i64>,
    has_subject: bool,
    has_text: bool,
}

/// A compiled set of templates: the built-in ones, and a tenant's over them.
#[derive(Clone)]
pub struct Registry {
    /// Renders HTML bodies, escaping values.
    html: Handlebars<'static>,
    /// Renders subjects and text bodies, which are not HTML.
    plain: Handlebars<'static>,
    /// Name, then locale, to what is registered.
    index: HashMap<String, HashMap<String, Entry>>,
}

fn key(name: &str, locale: &str, part: &str) -> String {
    format!("{name}@{locale}:{part}")
}

impl Registry {
    fn empty() -> Self {
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        let mut plain = Handlebars::new();
        plain.set_strict_mode(true);
        plain.register_escape_fn(handlebars::no_escape);
        Registry {
            html,
            plain,
            index: HashMap::new(),
        }
    }

    /// The built-in templates.
    pub fn built_in() -> Self {
        let mut registry = Registry::empty();
        for (name, locale, subject, html, text) in BUILT_IN {
            registry
                .add(name, locale, subject, html, text, None)
                .expect("built-in templates compile (checked by a test)");
        }
        registry
    }

    /// `base` with a tenant's templates over it. A template that no longer compiles (it
    /// was checked when it was written) is left out and logged.
    fn with_tenant(base: &Registry, tenant: &TenantId, templates: &[StoredTemplate]) -> Self {
        let mut registry = base.clone();
        for stored in templates {
            // A tenant's template replaces the built-in one in every locale.
            if let Some(locales) = registry.index.get_mut(&stored.template.name) {
                locales.retain(|_, entry| entry.version.is_some());
            }
        }
        for stored in templates {
            let t = &stored.template;
            if let Err(e) = registry.add(
                &t.name,
                &t.locale,
                t.subject.as_deref(),
                &t.html,
                t.text.as_deref(),
                Some(stored.version),
            ) {
                tracing::error!(%tenant, template = %t.name, error = %e, "a stored template does not compile");
            }
        }
        registry
    }

    fn add(
        &mut self,
        name: &str,
        locale: &str,
        subject: Option<&str>,
        html: &str,
        text: Option<&str>,
        version: Option<i64>,
    ) -> Result<(), TemplateError> {
        if name.starts_with('_') {
            self.html.register_partial(name, html)?;
            self.plain.register_partial(name, text.unwrap_or(html))?;
            return Ok(());
        }
        if let Some(subject) = subject {
            self.plain
                .register_template_string(&key(name, locale, "subject"), subject)?;
        }
        self.html
            .register_template_string(&key(name, locale, "html"), html)?;
        if let Some(text) = text {
            self.plain
                .register_template_string(&key(name, locale, "text"), text)?;
        }
        self.index.entry(name.to_owned()).or_default().insert(
            locale.to_owned(),
            Entry {
                version,
                has_subject: subject.is_some(),
                has_text: text.is_some(),
            },
        );
        Ok(())
    }

    /// The most specific locale of `name` in `chain`.
    fn find(&self, name: &str, chain: &[String]) -> Option<(&str, Entry)> {
        let locales = self.index.get(name)?;
        chain
            .iter()
            .find_map(|l| locales.get_key_value(l))
            .map(|(l, e)| (l.as_str(), *e))
    }

    /// Renders template `name` in the best of `locale`'s chain with `data`; `subject`, when
    /// given, replaces the template's subject.
    pub fn render(
        &self,
        name: &str,
        locale: Option<&str>,
        data: &Map<String, Value>,
        subject: Option<&str>,
    ) -> Result<(Rendered, RenderedFrom), RenderError> {
        if name == LAYOUT || name.starts_with('_') {
            return Err(RenderError::Unknown(name.to_owned()));
        }
        let chain = locale_chain(locale);
        let (found, entry) = self
            .find(name, &chain)
            .ok_or_else(|| RenderError::Unknown(name.to_owned()))?;
        let fail = |e: handlebars::RenderError| RenderError::Render {
            name: name.to_owned(),
            cause: e.to_string(),
        };
        // The data is wrapped once for every part: each `render` would copy it again.
        let mut context = Context::from(Value::Object(data.clone()));
        let subject = match subject {
            Some(subject) => subject.to_owned(),
            None if entry.has_subject => self
                .plain
                .render_with_context(&key(name, found, "subject"), &context)
                .map_err(fail)?,
            None => return Err(RenderError::NoSubject(name.to_owned())),
        };
        let mut html = self
            .html
            .render_with_context(&key(name, found, "html"), &context)
            .map_err(fail)?;
        let mut text = if entry.has_text {
            Some(
                self.plain
                    .render_with_context(&key(name, found, "text"), &context)
                    .map_err(fail)?,
            )
        } else {
            None
        };
        if let Some((layout_locale, layout)) = self.find(LAYOUT, &chain) {
            // The layout sees the data and the rendered part as `body`.
            let mut wrap = |registry: &Handlebars<'static>, part: &str, body: String| {
                if let Value::Object(fields) = context.data_mut() {
                    fields.insert("body".into(), Value::String(body));
                }
                registry
                    .render_with_context(&key(LAYOUT, layout_locale, part), &context)
                    .map_err(|e| RenderError::Render {
                        name: LAYOUT.to_owned(),
                        cause: e.to_string(),
                    })
            };
            html = wrap(&self.html, "html", html)?;
            if let Some(body) = text.take() {
                text = Some(if layout.has_text {
                    wrap(&self.plain, "text", body)?
                } else {
                    body
                });
            }
        }
        let text = text.unwrap_or_else(|| plain_text::from_html(&html));
        let rendered = Rendered {
            // A subject is one header line: data can never break it into two.
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            html,
            text,
        };
        let from = RenderedFrom {
            name: name.to_owned(),
            locale: found.to_owned(),
            version: entry.version,
        };
        Ok((rendered, from))
    }
}

struct Cached {
    revision: i64,
    checked: Instant,
    registry: Arc<Registry>,
}

/// Every tenant's templates, compiled on first use and kept while current.
pub struct Templates {
    built_in: Arc<Registry>,
    store: Arc<dyn Store>,
    tenants: Mutex<HashMap<TenantId, Cached>>,
}

impl Templates {
    /// The built-in templates, with tenants' templates read from `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Templates {
            built_in: Arc::new(Registry::built_in()),
            store,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's compiled templates. `fresh` checks the revision now rather than
    /// trusting one checked within the last second.
    pub async fn registry(
        &self,
        tenant: &TenantId,
        fresh: bool,
    ) -> Result<Arc<Registry>, StoreError> {
        let known = {
            let tenants = self
                .tenants
                .lock()
                .expect("the template cache is never poisoned");
            tenants
                .get(tenant)
                .map(|c| (c.revision, c.checked, c.registry.clone()))
        };
        if let Some((_, checked, registry)) = &known
            && !fresh
            && checked.elapsed() < REVISION_CHECK
        {
            return Ok(registry.clone());
        }
        let revision = self.store.template_revision(tenant).await?;
        let registry = match known {
            Some((cached, _, registry)) if cached == revision => registry,
            _ if revision == 0 => self.built_in.clone(),
            _ => {
                let templates = self.store.current_templates(tenant).await?;
                Arc::new(Registry::with_tenant(&self.built_in, tenant, &templates))
            }
        };
        let mut tenants = self
            .tenants
            .lock()
            .expect("the template cache is never poisoned");
        if tenants.len() >= CACHED_TENANTS && !tenants.contains_key(tenant) {
            let oldest = tenants
                .iter()
                .min_by_key(|(_, c)| c.checked)
                .map(|(t, _)| t.clone());
            if let Some(oldest) = oldest {
                tenants.remove(&oldest);
            }
        }
        tenants.insert(
            tenant.clone(),
            Cached {
                revision,
                checked: Instant::now(),
                registry: registry.clone(),
            },
        );
        Ok(registry)
    }

    /// Renders a tenant's template `name` (its own, else the built-in one).
    pub async fn render(
        &self,
        tenant: &TenantId,
        name: &str,
        locale: Option<&str>,
        data: &Map<String, Value>,
        subject: Option<&str>,
    ) -> Result<(Rendered, RenderedFrom), RenderError> {
        self.registry(tenant, false)
            .await?
            .render(name, locale, data, subject)
    }

    /// Drops what is compiled for `tenant`, after this process changed its templates, so
    /// that the next render here reads them again.
    pub fn forget(&self, tenant: &TenantId) {
        self.tenants
            .lock()
            .expect("the template cache is never poisoned")
            .remove(tenant);
    }

    /// The names of the built-in templates that can be sent.
    pub fn built_in_names(&self) -> Vec<String> {
        let mut names: Vec<_> = self
            .built_in
            .index
            .keys()
            .filter(|n| n.as_str() != LAYOUT)
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Whether `name` is a built-in template.
    pub fn is_built_in(&self, name: &str) -> bool {
        self.built_in.index.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn built_in_templates_render_in_their_layout_and_escape_html_only() {
        let registry = Registry::built_in();
        let (rendered, from) = registry
            .render("welcome", None, &data(json!({"name": "Ada <3"})), None)
            .unwrap();
        assert_eq!(rendered.subject, "Welcome, Ada <3!");
        assert!(rendered.html.contains("Welcome, Ada &lt;3!"));
        assert!(
            rendered.html.starts_with("<!doctype html>"),
            "the layout wraps it"
        );
        assert!(
            rendered.html.contains("because of your account"),
            "with the footer partial"
        );
        assert!(rendered.text.contains("Welcome, Ada <3!"));
        assert!(rendered.text.contains("because of your account"));
        assert_eq!(from.version, None);
        assert_eq!(from.locale, "");
    }

    #[test]
    fn locales_fall_back_from_region_to_language_to_default() {
        let registry = Registry::built_in();
        let name = data(json!({"name": "Zoé"}));
        let (fr_ca, from) = registry
            .render("welcome", Some("fr-CA"), &name, None)
            .unwrap();
        assert_eq!(fr_ca.subject, "Bienvenue, Zoé !");
        assert_eq!(from.locale, "fr");
        let (de, from) = registry.render("welcome", Some("de"), &name, None).unwrap();
        assert_eq!(de.subject, "Welcome, Zoé!");
        assert_eq!(from.locale, "");
        assert_eq!(
            locale_chain(Some("zh-Hant-TW")),
            ["zh-hant-tw", "zh-hant", "zh", ""]
        );
    }

    #[test]
    fn a_tenant_template_replaces_the_built_in_one_in_every_locale() {
        let tenant = TenantId::parse("acme").unwrap();
        let own = StoredTemplate {
            template: NewTemplate {
                name: "welcome".into(),
                locale: String::new(),
                subject: Some("Hi {{name}}".into()),
                html: "<p>Hi <b>{{name}}</b></p>{{> _footer}}".into(),
                text: None,
                sample_data: None,
            },
            version: 3,
            created_at: chrono::Utc::now(),
        };
        let registry = Registry::with_tenant(&Registry::built_in(), &tenant, &[own]);
        let (rendered, from) = registry
            .render("welcome", Some("fr"), &data(json!({"name": "Ada"})), None)
            .unwrap();
        assert_eq!(rendered.subject, "Hi Ada");
        assert_eq!(from.version, Some(3));
        assert!(
            rendered.text.starts_with("Hi Ada\n"),
            "the text is derived from the HTML: {:?}",
            rendered.text
        );
    }

    #[test]
    fn a_missing_variable_is_an_error_and_a_line_break_cannot_reach_the_subject() {
        let registry = Registry::built_in();
        assert!(matches!(
            registry.render("welcome", None, &Map::new(), None),
            Err(RenderError::Render { .. })
        ));
        let (rendered, _) = registry
            .render(
                "notification",
                None,
                &data(json!({"title": "a\r\nBcc: x@y.z", "body": "b"})),
                None,
            )
            .unwrap();
        assert_eq!(rendered.subject, "a Bcc: x@y.z");
        assert!(matches!(
            registry.render("nope", None, &Map::new(), None),
            Err(RenderError::Unknown(_))
        ));
        assert!(matches!(
            registry.render(LAYOUT, None, &Map::new(), None),
            Err(RenderError::Unknown(_))
        ));
    }

    #[test]
    fn a_template_that_does_not_compile_is_refused_with_line_and_column() {
        let template = NewTemplate {
            name: "broken".into(),
            locale: String::new(),
            subject: Some("fine".into()),
            html: "<p>\n  {{#if ok}}\n  yes\n{{/each}}</p>".into(),
            text: Some("{{name".into()),
            sample_data: None,
        };
        let errors = check(&template).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].part, "html");
        assert_eq!(errors[0].line, Some(4), "{errors:?}");
        assert!(errors[0].column.is_some());
        assert_eq!(errors[1].part, "text");
        assert_eq!(errors[1].line, Some(1));
    }
}
