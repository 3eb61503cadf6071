//! A compiled set of templates, the built-in ones with a tenant's over them, and how
//! one is rendered: the locale chain, the layout, the plain-text body.

use super::builtin::BUILT_IN;
use super::cycles::partial_cycle;
use super::limits::{Metered, MeteredEach, metered_part};
use super::plain_text;
use super::{LAYOUT, RenderError, RenderLimits, Rendered, locale_chain};
use crate::domain::TenantId;
use crate::outcome::RenderedFrom;
use crate::store::{NewTemplate, StoredTemplate};
use handlebars::{Context, Handlebars, TemplateError};
use serde_json::{Map, Value};
use std::collections::HashMap;

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

    /// The names of the templates it holds, partials and the layout included.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Whether it holds a template named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// `base` with a tenant's templates over it. A template that no longer compiles (it
    /// was checked when it was written) is left out and logged.
    pub(super) fn with_tenant(
        base: &Registry,
        tenant: &TenantId,
        templates: &[StoredTemplate],
    ) -> Self {
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
                metered_part(&self.plain, &key(name, found, "subject"), &context).map_err(fail)?
            }
            None => return Err(RenderError::NoSubject(name.to_owned())),
        };
        let mut html =
            metered_part(&self.html, &key(name, found, "html"), &context).map_err(fail)?;
        let mut text = if entry.has_text {
            Some(metered_part(&self.plain, &key(name, found, "text"), &context).map_err(fail)?)
        } else {
            None
        };
        if let Some((layout_locale, layout)) = self.find(LAYOUT, &chain) {
            // The layout sees the data and the rendered part as `body`.
            let mut wrap = |registry: &Handlebars<'static>, part: &str, body: String| {
                if let Value::Object(fields) = context.data_mut() {
                    fields.insert("body".into(), Value::String(body));
                }
                metered_part(registry, &key(LAYOUT, layout_locale, part), &context).map_err(|e| {
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
