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
use crate::outcome::RenderedFrom;
use crate::store::{NewTemplate, StoreError, StoredTemplate, TemplateStore};
use handlebars::{
    BlockContext, BlockParams, Context, Handlebars, Helper, HelperDef, HelperResult, Output,
    RenderContext, RenderErrorReason, Renderable, Template, TemplateError,
    template::TemplateElement,
};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::cell::RefCell;
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

/// The partials `template` includes (`{{> _name}}`, `{{#> _name}}`), into `found`; an
/// error when one is chosen at render time, which no check before the render could follow.
fn included_partials(template: &Template, found: &mut Vec<String>) -> Result<(), String> {
    for element in &template.elements {
        let nested: Vec<&Template> = match element {
            TemplateElement::PartialExpression(d) | TemplateElement::PartialBlock(d) => {
                match d.name.as_name() {
                    Some(name) if name.starts_with('@') => {} // @partial-block
                    Some(name) => found.push(name.to_owned()),
                    None => {
                        return Err(
                            "a partial must be named in the template, not chosen at render time"
                                .into(),
                        );
                    }
                }
                d.template.iter().collect()
            }
            TemplateElement::HelperBlock(h) => h.template.iter().chain(&h.inverse).collect(),
            TemplateElement::DecoratorBlock(d) => d.template.iter().collect(),
            _ => Vec::new(),
        };
        for template in nested {
            included_partials(template, found)?;
        }
    }
    Ok(())
}

/// Finds partials that include each other in `registry`. Handlebars refuses a partial
/// that includes itself, but `_a` → `_b` → `_a` would recurse until the thread's stack
/// overflows and the process aborts: such a set is refused when written, and a registry
/// holding one renders nothing.
fn partial_cycle(registry: &Handlebars<'static>) -> Result<(), String> {
    let mut includes: HashMap<&str, Vec<String>> = HashMap::new();
    for (name, template) in registry.get_templates() {
        let mut found = Vec::new();
        included_partials(template, &mut found).map_err(|e| format!("{name}: {e}"))?;
        includes.insert(name, found);
    }
    // Depth-first, from every template, along the partials each includes.
    fn visit<'a>(
        name: &'a str,
        includes: &'a HashMap<&str, Vec<String>>,
        path: &mut Vec<&'a str>,
        done: &mut std::collections::HashSet<&'a str>,
    ) -> Result<(), String> {
        if let Some(start) = path.iter().position(|n| *n == name) {
            let mut cycle = path[start..].to_vec();
            cycle.push(name);
            return Err(format!(
                "partials include each other: {}",
                cycle.join(" → ")
            ));
        }
        if done.contains(name) {
            return Ok(());
        }
        path.push(name);
        for next in includes.get(name).into_iter().flatten() {
            visit(next, includes, path, done)?;
        }
        path.pop();
        done.insert(name);
        Ok(())
    }
    let mut done = std::collections::HashSet::new();
    for name in includes.keys() {
        visit(name, &includes, &mut Vec::new(), &mut done)?;
    }
    Ok(())
}

/// How much one email may render to and how long it may take. A tenant's template and
/// data are untrusted: a 2 KB template with three nested `each` over 450 items renders
/// gigabytes, and nested loops with empty bodies render nothing for minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderLimits {
    /// The most bytes an email's subject, HTML and text may come to, together.
    pub max_bytes: usize,
    /// The longest one email may take to render.
    #[serde(with = "humantime_serde")]
    pub max_time: Duration,
}

impl Default for RenderLimits {
    fn default() -> Self {
        RenderLimits {
            max_bytes: 1024 * 1024,
            max_time: Duration::from_secs(1),
        }
    }
}

/// The limit a render reached, as the configuration names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderLimit {
    /// `email.render.max_bytes`.
    Size(usize),
    /// `email.render.max_time`.
    Time(Duration),
}

impl std::fmt::Display for RenderLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderLimit::Size(bytes) => write!(
                f,
                "the render size limit of {bytes} bytes (email.render.max_bytes)"
            ),
            RenderLimit::Time(time) => write!(
                f,
                "the render time limit of {} (email.render.max_time)",
                humantime_serde::re::humantime::format_duration(*time)
            ),
        }
    }
}

/// What the render running on this thread has left. Handlebars passes helpers no state of
/// their own, and a render is synchronous, so the budget is kept per thread for its span.
struct Budget {
    limits: RenderLimits,
    bytes_left: usize,
    deadline: Instant,
    reached: Option<RenderLimit>,
}

thread_local! {
    static BUDGET: RefCell<Option<Budget>> = const { RefCell::new(None) };
}

/// Spends `bytes` of the running render's budget; fails once a limit is reached. Outside a
/// metered render it allows everything.
fn spend(bytes: usize) -> Result<(), RenderLimit> {
    BUDGET.with_borrow_mut(|budget| {
        let Some(budget) = budget else { return Ok(()) };
        if let Some(limit) = budget.reached {
            return Err(limit);
        }
        let limit = if bytes > budget.bytes_left {
            RenderLimit::Size(budget.limits.max_bytes)
        } else if Instant::now() > budget.deadline {
            RenderLimit::Time(budget.limits.max_time)
        } else {
            budget.bytes_left -= bytes;
            return Ok(());
        };
        budget.reached = Some(limit);
        Err(limit)
    })
}

/// Meters every render on this thread until dropped.
struct Metered;

impl Metered {
    fn start(limits: RenderLimits) -> Self {
        BUDGET.set(Some(Budget {
            limits,
            bytes_left: limits.max_bytes,
            deadline: Instant::now() + limits.max_time,
            reached: None,
        }));
        Metered
    }

    /// The limit the render reached, if it stopped at one.
    fn reached(&self) -> Option<RenderLimit> {
        BUDGET.with_borrow(|b| b.as_ref().and_then(|b| b.reached))
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        BUDGET.set(None);
    }
}

/// Where a metered render writes: every write is spent from the budget first.
struct MeteredOutput(Vec<u8>);

impl std::io::Write for MeteredOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        spend(buf.len()).map_err(|limit| std::io::Error::other(limit.to_string()))?;
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Handlebars' `each`, with the render's time checked at every item: loops whose bodies
/// write nothing would otherwise never meet the budget. Same semantics as the built-in
/// helper: arrays and objects, `@index`, `@key`, `@first`, `@last`, block parameters
/// (`as |item key|`), `{{else}}` for an empty or missing value.
struct MeteredEach;

impl HelperDef for MeteredEach {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let value = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("each", 0))?;
        let Some(template) = h.template() else {
            return Ok(());
        };
        let items: Vec<(Value, &Value)> = match value.value() {
            Value::Array(list) => list
                .iter()
                .enumerate()
                .map(|(i, v)| (Value::from(i), v))
                .collect(),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| (Value::from(k.as_str()), v))
                .collect(),
            _ => Vec::new(),
        };
        let iterable = matches!(value.value(), Value::Array(_) | Value::Object(_));
        if items.is_empty() {
            return match h.inverse() {
                Some(otherwise) => otherwise.render(r, ctx, rc, out),
                None if !iterable && r.strict_mode() => {
                    Err(RenderErrorReason::MissingVariable(value.relative_path().cloned()).into())
                }
                None => Ok(()),
            };
        }
        let mut block = BlockContext::new();
        match value.context_path() {
            Some(path) => block.base_path_mut().clone_from(path),
            None => block.set_base_value(value.value().clone()),
        }
        rc.push_block(block);
        let base_path = value.context_path();
        let is_object = matches!(value.value(), Value::Object(_));
        let last = items.len() - 1;
        for (i, (key, item)) in items.iter().enumerate() {
            spend(0).map_err(|limit| RenderErrorReason::Other(limit.to_string()))?;
            if let Some(block) = rc.block_mut() {
                block.set_local_var("first", Value::from(i == 0));
                block.set_local_var("last", Value::from(i == last));
                block.set_local_var("index", Value::from(i));
                if is_object {
                    block.set_local_var("key", key.clone());
                }
                let segment = match key {
                    Value::String(k) => k.clone(),
                    _ => i.to_string(),
                };
                match base_path {
                    Some(path) => {
                        let mut path = path.clone();
                        path.push(segment);
                        *block.base_path_mut() = path;
                    }
                    None => block.set_base_value((*item).clone()),
                }
                let mut params = BlockParams::new();
                let (item_param, key_param) = match (h.block_param(), h.block_param_pair()) {
                    (Some(item), _) => (Some(item), None),
                    (None, Some((item, key))) => (Some(item), Some(key)),
                    (None, None) => (None, None),
                };
                if let Some(name) = item_param {
                    if base_path.is_some() {
                        params.add_path(name, Vec::new())?;
                    } else {
                        params.add_value(name, (*item).clone())?;
                    }
                    if let Some(name) = key_param {
                        params.add_value(name, key.clone())?;
                    }
                    block.set_block_params(params);
                }
            }
            template.render(r, ctx, rc, out)?;
        }
        rc.pop_block();
        Ok(())
    }
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
    /// How much a render may make.
    limits: RenderLimits,
    /// Partials that include each other, if any (see [`partial_cycle`]): found once when
    /// the registry is built, refused at every render.
    partial_cycle: Option<String>,
}

fn key(name: &str, locale: &str, part: &str) -> String {
    format!("{name}@{locale}:{part}")
}

impl Registry {
    fn empty() -> Self {
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        html.register_helper("each", Box::new(MeteredEach));
        let mut plain = Handlebars::new();
        plain.set_strict_mode(true);
        plain.register_escape_fn(handlebars::no_escape);
        plain.register_helper("each", Box::new(MeteredEach));
        Registry {
            html,
            plain,
            index: HashMap::new(),
            limits: RenderLimits::default(),
            partial_cycle: None,
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
        registry.find_partial_cycle();
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
        registry.find_partial_cycle();
        if let Some(cycle) = &registry.partial_cycle {
            tracing::error!(%tenant, %cycle, "the tenant's templates cannot render");
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

    fn find_partial_cycle(&mut self) {
        self.partial_cycle = partial_cycle(&self.html)
            .and_then(|()| partial_cycle(&self.plain))
            .err();
    }

    /// Refuses partials that include each other (see [`partial_cycle`]).
    pub fn check_partials(&self) -> Result<(), RenderError> {
        match &self.partial_cycle {
            Some(cycle) => Err(RenderError::PartialCycle(cycle.clone())),
            None => Ok(()),
        }
    }

    /// This registry, rendering within `limits`.
    pub fn with_limits(mut self, limits: RenderLimits) -> Self {
        self.limits = limits;
        self
    }

    /// This registry with `template` added over what it has: what the registry would be
    /// once the template is stored.
    pub fn with_template(&self, template: &NewTemplate) -> Result<Self, TemplateError> {
        let mut registry = self.clone();
        if let Some(locales) = registry.index.get_mut(&template.name) {
            locales.retain(|_, entry| entry.version.is_some());
        }
        registry.add(
            &template.name,
            &template.locale,
            template.subject.as_deref(),
            &template.html,
            template.text.as_deref(),
            Some(0),
        )?;
        registry.find_partial_cycle();
        Ok(registry)
    }

    /// Renders template `name` in the best of `locale`'s chain with `data`; `subject`, when
    /// given, replaces the template's subject. The render stops at the registry's limits.
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
        self.check_partials()?;
        let metered = Metered::start(self.limits);
        let rendered = self.render_metered(name, locale, data, subject);
        match (rendered, metered.reached()) {
            (Err(RenderError::Render { name, .. }), Some(limit)) => {
                Err(RenderError::Limit { name, limit })
            }
            (rendered, _) => rendered,
        }
    }

    /// Renders one part into metered output.
    fn part(
        registry: &Handlebars<'static>,
        key: &str,
        context: &Context,
    ) -> Result<String, handlebars::RenderError> {
        let mut output = MeteredOutput(Vec::new());
        registry.render_with_context_to_write(key, context, &mut output)?;
        // Handlebars writes only the `&str`s it renders: the bytes are UTF-8.
        String::from_utf8(output.0).map_err(handlebars::RenderError::from)
    }

    fn render_metered(
        &self,
        name: &str,
        locale: Option<&str>,
        data: &Map<String, Value>,
        subject: Option<&str>,
    ) -> Result<(Rendered, RenderedFrom), RenderError> {
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
            None if entry.has_subject => {
                Self::part(&self.plain, &key(name, found, "subject"), &context).map_err(fail)?
            }
            None => return Err(RenderError::NoSubject(name.to_owned())),
        };
        let mut html = Self::part(&self.html, &key(name, found, "html"), &context).map_err(fail)?;
        let mut text = if entry.has_text {
            Some(Self::part(&self.plain, &key(name, found, "text"), &context).map_err(fail)?)
        } else {
            None
        };
        if let Some((layout_locale, layout)) = self.find(LAYOUT, &chain) {
            // The layout sees the data and the rendered part as `body`.
            let mut wrap = |registry: &Handlebars<'static>, part: &str, body: String| {
                if let Value::Object(fields) = context.data_mut() {
                    fields.insert("body".into(), Value::String(body));
                }
                Self::part(registry, &key(LAYOUT, layout_locale, part), &context).map_err(|e| {
                    RenderError::Render {
                        name: LAYOUT.to_owned(),
                        cause: e.to_string(),
                    }
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
            // Shown as locales are conventionally written (`fr-CA`), wherever it is shown.
            locale: crate::domain::Locale::conventional(found),
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
    store: Arc<dyn TemplateStore>,
    tenants: Mutex<HashMap<TenantId, Cached>>,
}

impl Templates {
    /// The built-in templates, with tenants' templates read from `store`, rendering within
    /// `limits`.
    pub fn new(store: Arc<dyn TemplateStore>, limits: RenderLimits) -> Self {
        Templates {
            built_in: Arc::new(Registry::built_in().with_limits(limits)),
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

    fn only_html(name: &str, html: &str) -> NewTemplate {
        NewTemplate {
            name: name.into(),
            locale: String::new(),
            subject: Some("s".into()),
            html: html.into(),
            text: Some(html.into()),
            sample_data: None,
        }
    }

    #[test]
    fn each_keeps_the_built_in_helpers_meaning() {
        let template = only_html(
            "list",
            "{{#each items as |item i|}}{{i}}={{item}}{{#if @first}}F{{/if}}{{#if @last}}L{{/if}};\
             {{else}}none{{/each}}|{{#each map}}{{@key}}:{{this}}/{{@index}};{{/each}}|\
             {{#each people}}{{name}}@{{../title}};{{/each}}",
        );
        let registry = Registry::built_in().with_template(&template).unwrap();
        let render = |value: Value| registry.render("list", None, &data(value), None);
        let (rendered, _) = render(json!({
            "items": ["a", "b", "c"],
            "map": {"x": 1, "y": 2},
            "people": [{"name": "Ada"}, {"name": "Bo"}],
            "title": "T",
        }))
        .unwrap();
        assert!(
            rendered
                .text
                .contains("0=aF;1=b;2=cL;|x:1/0;y:2/1;|Ada@T;Bo@T;"),
            "{}",
            rendered.text
        );
        let (rendered, _) =
            render(json!({"items": [], "map": {}, "people": [], "title": ""})).unwrap();
        assert!(rendered.text.contains("none||"), "{}", rendered.text);
        // As the built-in helper: a missing list takes the `else`, and without one it is
        // an error in strict mode.
        let (rendered, _) = render(json!({"map": {}, "people": [], "title": ""})).unwrap();
        assert!(rendered.text.starts_with("none|"), "{}", rendered.text);
        let bare = registry
            .with_template(&only_html("bare", "{{#each items}}x{{/each}}"))
            .unwrap();
        assert!(
            matches!(
                bare.render("bare", None, &data(json!({})), None),
                Err(RenderError::Render { .. })
            ),
            "a missing list is an error in strict mode"
        );
    }

    #[test]
    fn a_template_without_a_subject_takes_the_sends() {
        let mut template = only_html("bare", "<p>Hi {{name}}</p>");
        template.subject = None;
        let registry = Registry::built_in().with_template(&template).unwrap();
        let ada = data(json!({"name": "Ada"}));
        assert!(matches!(
            registry.render("bare", None, &ada, None),
            Err(RenderError::NoSubject(name)) if name == "bare"
        ));
        let (rendered, _) = registry.render("bare", None, &ada, Some("Hello")).unwrap();
        assert_eq!(rendered.subject, "Hello");
    }

    #[test]
    fn partials_that_include_each_other_are_refused_not_recursed_into() {
        let registry = Registry::built_in()
            .with_template(&only_html("_a", "a{{> _b}}"))
            .unwrap()
            .with_template(&only_html("uses", "<p>{{> _a}}</p>"))
            .unwrap();
        registry.check_partials().unwrap();
        let cyclic = registry
            .with_template(&only_html("_b", "{{#if x}}b{{> _a}}{{/if}}"))
            .unwrap();
        match cyclic.render("uses", None, &data(json!({"x": true})), None) {
            Err(RenderError::PartialCycle(cycle)) => {
                assert!(cycle.contains("_a → _b → _a") || cycle.contains("_b → _a → _b"));
            }
            other => panic!("{other:?}"),
        }
        let dynamic = registry
            .with_template(&only_html("_c", "{{> (lookup this \"which\")}}"))
            .unwrap();
        assert!(dynamic.check_partials().is_err());
    }

    #[test]
    fn a_render_stops_at_its_size_and_time_limits() {
        let limits = RenderLimits {
            max_bytes: 10_000,
            max_time: Duration::from_millis(100),
        };
        let items: Vec<u32> = (0..200).collect();
        let items = data(json!({ "items": items }));
        let registry = Registry::built_in()
            .with_template(&only_html(
                "big",
                "{{#each items}}{{#each ../items}}<p>{{this}}</p>{{/each}}{{/each}}",
            ))
            .unwrap()
            .with_template(&only_html(
                "silent",
                "{{#each items}}{{#each ../items}}{{#each ../../items}}{{#each ../../../items}}\
                 {{/each}}{{/each}}{{/each}}{{/each}}",
            ))
            .unwrap()
            .with_limits(limits);
        match registry.render("big", None, &items, None) {
            Err(RenderError::Limit { name, limit }) => {
                assert_eq!(name, "big");
                assert_eq!(limit, RenderLimit::Size(10_000));
            }
            other => panic!("{other:?}"),
        }
        match registry.render("silent", None, &items, None) {
            Err(RenderError::Limit { limit, .. }) => {
                assert_eq!(limit, RenderLimit::Time(limits.max_time))
            }
            other => panic!("{other:?}"),
        }
        // The budget is the render's own: the next one starts afresh.
        registry
            .render("welcome", None, &data(json!({"name": "Ada"})), None)
            .unwrap();
    }
}
