//! The event documents' values as the OpenAPI description states them: the same bounds
//! the parsers of this module enforce, so that a client generated from the description
//! sends what Herald accepts, and schemathesis can tell a disagreement between the two.

use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};

/// Text on one line: no control characters (what [`super::parse::text`] refuses).
pub const ONE_LINE: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// Text that may hold line breaks and tabs, but no other control character.
pub const MULTILINE: &str = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$";

/// A tenant id in its string form.
pub const TENANT_ID: &str = "^[A-Za-z0-9_.-]{1,64}$";

/// Printable text with something besides spaces (what `check_tenant_name` asks of a name).
pub const NOT_ONLY_SPACES: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// Bounded text, as [`super::parse::text`] reads it: 1 to `max` characters.
pub fn text(max: usize, multiline: bool) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(if multiline { MULTILINE } else { ONE_LINE }))
}

/// An identifier chosen by the client (user, conversation, message, entity).
pub fn opaque_id() -> Schema {
    text(128, false).into()
}

/// 1 to `max` user ids.
pub fn user_ids<const MAX: usize>() -> Schema {
    ArrayBuilder::new()
        .items(text(128, false))
        .min_items(Some(1))
        .max_items(Some(MAX))
        .into()
}

/// A tenant id: a string of 1 to 64 `A-Z a-z 0-9 _ - .`, or a whole number, as the seeds
/// send it. Optional in a body: the API key decides the tenant.
pub fn tenant_id() -> Schema {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(TENANT_ID)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .maximum(Some(u64::MAX)),
        )
        .description(Some(
            "The tenant, as a string or a whole number; it must be the API key's tenant \
             (403 otherwise), which is also the default.",
        ))
        .into()
}

/// The last millisecond of year 9999, the last an RFC 3339 timestamp can write.
pub const LAST_MILLISECOND: u64 = 253_402_300_799_999;

/// An RFC 3339 timestamp, or milliseconds since the epoch.
pub fn timestamp() -> Schema {
    use utoipa::openapi::schema::OneOfBuilder;
    let text = ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)));
    let millis = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
        .maximum(Some(LAST_MILLISECOND))
        .description(Some("Milliseconds since the epoch"));
    OneOfBuilder::new().item(text).item(millis).into()
}

/// One email address, at most 254 characters.
fn address() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
        .max_length(Some(254))
}

/// One email address.
pub fn email_address() -> Schema {
    address().into()
}

/// 1 to 100 email addresses.
pub fn email_addresses() -> Schema {
    ArrayBuilder::new()
        .items(address())
        .min_items(Some(1))
        .max_items(Some(100))
        .into()
}

/// A template name: 1 to 64 of `a-z 0-9 _ - .`, starting with a letter or digit.
pub fn template_name() -> Schema {
    matching("^[a-z0-9][a-z0-9_.-]{0,63}$").into()
}

/// A string matching `pattern`.
fn matching(pattern: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
}

/// A language tag such as `fr` or `fr-CA`, as [`super::Locale`] parses it.
pub fn locale() -> Schema {
    locale_pattern("^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
}

/// A language tag, or empty for the default locale (a query's `?locale=`).
pub fn locale_or_default() -> Schema {
    locale_pattern("^([A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*)?$")
}

fn locale_pattern(pattern: &str) -> Schema {
    matching(pattern).max_length(Some(35)).into()
}

/// A template's name in a path: a sendable name, a partial (`_footer`) or `layout`.
pub fn template_path_name() -> Schema {
    matching("^_?[a-z0-9][a-z0-9_.-]{0,63}$").into()
}

/// 1 to `MAX` characters without spaces (a provider's key id, team id, topic, project).
pub fn word<const MAX: usize>() -> Schema {
    matching("^\\S*$")
        .min_length(Some(1))
        .max_length(Some(MAX))
        .into()
}

/// A cursor or version number this API gave: a positive whole number, in a query.
pub fn positive_number_text() -> Schema {
    matching("^[1-9][0-9]{0,17}$").into()
}

/// A whole number from 0 to `max`.
pub fn whole_number(max: u64) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
        .maximum(Some(max))
        .into()
}

/// `schema`, or null: an optional field may be absent or null.
pub fn or_null(schema: Schema) -> Schema {
    OneOfBuilder::new()
        .item(schema)
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

/// Declares optional variants of schema functions: `optional::tenant_id()` is
/// `or_null(tenant_id())`.
pub mod optional {
    use super::{Schema, or_null};

    macro_rules! optional {
        ($($name:ident),+) => {$(
            #[doc = concat!("[`super::", stringify!($name), "`], or null.")]
            pub fn $name() -> Schema {
                or_null(super::$name())
            }
        )+};
    }

    optional!(tenant_id, locale, email_address, timestamp);

    /// 1 to `MAX` user ids, or null.
    pub fn user_ids<const MAX: usize>() -> Schema {
        or_null(super::user_ids::<MAX>())
    }

    /// Bounded one-line text of at most `MAX` characters, or null.
    pub fn line<const MAX: usize>() -> Schema {
        or_null(super::text(MAX, false).into())
    }

    /// Bounded text of at most `MAX` characters, line breaks allowed, or null.
    pub fn lines<const MAX: usize>() -> Schema {
        or_null(super::text(MAX, true).into())
    }

    /// A whole number from 0 to `MAX`, or null.
    pub fn whole_number<const MAX: u64>() -> Schema {
        or_null(super::whole_number(MAX))
    }
}

/// Bounded one-line text of at most `MAX` characters.
pub fn line<const MAX: usize>() -> Schema {
    text(MAX, false).into()
}

/// Bounded text of at most `MAX` characters, line breaks allowed.
pub fn lines<const MAX: usize>() -> Schema {
    text(MAX, true).into()
}
