//! Email templates in Handlebars, strict mode: a variable the data lacks is an error, not
//! an empty string. HTML bodies are HTML-escaped; subjects and text bodies are not.

use handlebars::Handlebars;
use serde_json::{Map, Value};

/// The built-in templates, compiled into the binary: (name, subject, html, text).
const BUILT_IN: [(&str, &str, &str, &str); 3] = [
    (
        "welcome",
        include_str!("../../../templates/welcome/subject.hbs"),
        include_str!("../../../templates/welcome/html.hbs"),
        include_str!("../../../templates/welcome/text.hbs"),
    ),
    (
        "notification",
        include_str!("../../../templates/notification/subject.hbs"),
        include_str!("../../../templates/notification/html.hbs"),
        include_str!("../../../templates/notification/text.hbs"),
    ),
    (
        "password-reset",
        include_str!("../../../templates/password-reset/subject.hbs"),
        include_str!("../../../templates/password-reset/html.hbs"),
        include_str!("../../../templates/password-reset/text.hbs"),
    ),
];

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
    /// The data does not fit the template (a missing variable, in strict mode).
    #[error("rendering '{name}': {cause}")]
    Render {
        /// The template.
        name: String,
        /// Handlebars' message, with line and column.
        cause: String,
    },
}

/// The compiled templates.
pub struct Templates {
    /// Renders HTML bodies, escaping values.
    html: Handlebars<'static>,
    /// Renders subjects and text bodies, which are not HTML.
    plain: Handlebars<'static>,
}

impl Templates {
    /// Compiles the built-in templates.
    pub fn built_in() -> Self {
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        let mut plain = Handlebars::new();
        plain.set_strict_mode(true);
        plain.register_escape_fn(handlebars::no_escape);
        for (name, subject, body_html, body_text) in BUILT_IN {
            let compile = |registry: &mut Handlebars<'static>, part: &str, source: &str| {
                registry
                    .register_template_string(&format!("{name}/{part}"), source)
                    .expect("built-in templates compile (checked by a test)");
            };
            compile(&mut plain, "subject", subject);
            compile(&mut html, "html", body_html);
            compile(&mut plain, "text", body_text);
        }
        Templates { html, plain }
    }

    /// Renders template `name` with `data`.
    pub fn render(&self, name: &str, data: &Map<String, Value>) -> Result<Rendered, RenderError> {
        if !self.html.has_template(&format!("{name}/html")) {
            return Err(RenderError::Unknown(name.to_owned()));
        }
        let fail = |e: handlebars::RenderError| RenderError::Render {
            name: name.to_owned(),
            cause: e.to_string(),
        };
        let subject = self
            .plain
            .render(&format!("{name}/subject"), data)
            .map_err(fail)?;
        let html = self
            .html
            .render(&format!("{name}/html"), data)
            .map_err(fail)?;
        let text = self
            .plain
            .render(&format!("{name}/text"), data)
            .map_err(fail)?;
        Ok(Rendered {
            // A subject is one header line: data can never break it into two.
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            html,
            text,
        })
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
    fn built_in_templates_render_and_escape_html_only() {
        let templates = Templates::built_in();
        let rendered = templates
            .render("welcome", &data(json!({"name": "Ada <3"})))
            .unwrap();
        assert_eq!(rendered.subject, "Welcome, Ada <3!");
        assert!(rendered.html.contains("Welcome, Ada &lt;3!"));
        assert!(rendered.text.contains("Welcome, Ada <3!"));
    }

    #[test]
    fn a_missing_variable_is_an_error_and_a_line_break_cannot_reach_the_subject() {
        let templates = Templates::built_in();
        assert!(matches!(
            templates.render("welcome", &Map::new()),
            Err(RenderError::Render { .. })
        ));
        let rendered = templates
            .render(
                "notification",
                &data(json!({"title": "a\r\nBcc: x@y.z", "body": "b"})),
            )
            .unwrap();
        assert_eq!(rendered.subject, "a Bcc: x@y.z");
        assert!(matches!(
            templates.render("nope", &Map::new()),
            Err(RenderError::Unknown(_))
        ));
    }
}
