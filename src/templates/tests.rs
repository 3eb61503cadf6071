//! The templates' unit tests: rendering, escaping, limits and cycles.

use super::*;
use crate::domain::TenantId;
use crate::store::StoredTemplate;
use serde_json::{Map, Value, json};
use std::time::Duration;

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
    let (rendered, _) = render(json!({"items": [], "map": {}, "people": [], "title": ""})).unwrap();
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
