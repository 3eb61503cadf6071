//! The built-in templates under `templates/`, compiled into the binary: what every
//! tenant has until it puts its own of the same name.

use super::LAYOUT;

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
                "../../templates/",
                $dir,
                "/subject.hbs"
            ))),
            include_str!(concat!("../../templates/", $dir, "/html.hbs")),
            Some(include_str!(concat!("../../templates/", $dir, "/text.hbs"))),
        )
    };
    ($name:literal, $dir:literal, $locale:literal) => {
        (
            $name,
            $locale,
            Some(include_str!(concat!(
                "../../templates/",
                $dir,
                "/",
                $locale,
                "/subject.hbs"
            ))),
            include_str!(concat!("../../templates/", $dir, "/", $locale, "/html.hbs")),
            Some(include_str!(concat!(
                "../../templates/",
                $dir,
                "/",
                $locale,
                "/text.hbs"
            ))),
        )
    };
}

/// The templates under `templates/`.
pub(super) const BUILT_IN: [BuiltIn; 6] = [
    (
        LAYOUT,
        "",
        None,
        include_str!("../../templates/layout/html.hbs"),
        Some(include_str!("../../templates/layout/text.hbs")),
    ),
    (
        "_footer",
        "",
        None,
        include_str!("../../templates/_footer/html.hbs"),
        Some(include_str!("../../templates/_footer/text.hbs")),
    ),
    built_in!("welcome", "welcome"),
    built_in!("welcome", "welcome", "fr"),
    built_in!("notification", "notification"),
    built_in!("password-reset", "password-reset"),
];
