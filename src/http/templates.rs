//! Template authoring: a tenant's email templates, versioned (every PUT keeps the earlier
//! versions), checked when written (a template that does not compile is 422 with its line
//! and column), and previewed without sending anything.

use super::AppState;
use super::auth::Authenticated;
use super::body::JsonBody;
use super::error::answers::{BodyRefusals, InputRefusals, KeyRefusals};
use super::error::{ApiError, ErrorBody, invalid};
use crate::domain::parse::{self, FieldError, FieldErrors, Fields};
use crate::domain::{Locale, TemplateName, schema};
use crate::outcome::RenderedFrom;
use crate::store::{NewTemplate, StoredTemplate};
use crate::templates::{self, LAYOUT, RenderError, Rendered};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// The template routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/templates", get(list))
        .route("/v1/templates/{name}", get(show).put(put).delete(delete))
        .route("/v1/templates/{name}/preview", post(preview))
}

/// Longest subject template, in characters.
const SUBJECT_MAX: usize = 1_000;
/// Longest body template, in characters.
const BODY_MAX: usize = 512 * 1024;

/// A version of a template, as answered.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateView {
    /// The template's name.
    pub name: String,
    /// Its locale, or absent for the default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// This version's number.
    pub version: i64,
    /// The subject template (absent for partials and the layout).
    pub subject: Option<String>,
    /// The HTML body template.
    pub html: String,
    /// The text body template; derived from the HTML when absent.
    pub text: Option<String>,
    /// The data previews use when given none.
    #[schema(value_type = Option<Object>)]
    pub sample_data: Option<Value>,
    /// When this version was written.
    pub created_at: DateTime<Utc>,
    /// Every version of the template in this locale, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<i64>,
}

impl TemplateView {
    fn of(stored: StoredTemplate, versions: Vec<i64>) -> Self {
        let t = stored.template;
        TemplateView {
            name: t.name,
            locale: Some(t.locale)
                .filter(|l| !l.is_empty())
                .map(|l| Locale::conventional(&l)),
            version: stored.version,
            subject: t.subject,
            html: t.html,
            text: t.text,
            sample_data: t.sample_data.and_then(|d| serde_json::from_str(&d).ok()),
            created_at: stored.created_at,
            versions,
        }
    }
}

/// A tenant's templates.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateList {
    /// The newest version of each of the tenant's own templates, by name and locale.
    pub items: Vec<TemplateView>,
    /// The built-in templates, usable unless the tenant has its own of the same name.
    pub built_in: Vec<String>,
}

/// The body of `PUT /v1/templates/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Documents the body, which is parsed field by field.
pub struct TemplateBody {
    /// The subject (Handlebars, not HTML-escaped). Without one, each send must give its
    /// own `subject`; partials (names starting with `_`) and the `layout` have none.
    #[schema(schema_with = schema::optional::line::<SUBJECT_MAX>)]
    subject: Option<String>,
    /// The HTML body (Handlebars, HTML-escaped). The `layout` places the body with
    /// `{{{body}}}`.
    #[schema(schema_with = schema::lines::<BODY_MAX>)]
    html: String,
    /// The text body; derived from the HTML when absent.
    #[schema(schema_with = schema::optional::lines::<BODY_MAX>)]
    text: Option<String>,
    /// The locale this version is for (`fr`, `fr-CA`); absent for the default.
    #[schema(schema_with = schema::optional::locale)]
    locale: Option<String>,
    /// Data that previews use when given none.
    #[schema(value_type = Option<Object>)]
    sample_data: Option<Value>,
}

/// The body of `POST /v1/templates/{name}/preview`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Documents the body, which is parsed field by field.
pub struct PreviewBody {
    /// The data to render with; by default the template's `sampleData`.
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
    /// The locale to render (falling back as a send does).
    #[schema(schema_with = schema::optional::locale)]
    locale: Option<String>,
}

/// A rendered preview.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewView {
    /// The rendered subject.
    pub subject: String,
    /// The rendered HTML body, in the layout.
    pub html: String,
    /// The rendered text body.
    pub text: String,
    /// What was rendered: name, locale and version (none for a built-in template).
    pub template: RenderedFrom,
}

/// The query of the routes that read one template.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TemplateParams {
    /// The locale (`fr-CA`); absent or empty for the default.
    #[param(schema_with = schema::locale_or_default)]
    locale: Option<String>,
    /// One version; absent for the newest.
    #[param(schema_with = schema::positive_number_text)]
    version: Option<String>,
}

/// The `{name}` of the template routes, as documented.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Documents the parameter, which `path_name` reads.
pub struct TemplatePath {
    /// The template's name; `_name` for a partial, `layout` for the layout.
    #[param(schema_with = schema::template_path_name)]
    name: String,
}

/// The query of `DELETE /v1/templates/{name}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LocaleParams {
    /// Only this locale's versions (`fr-CA`); absent for every locale, empty for the
    /// default.
    #[param(schema_with = schema::locale_or_default)]
    locale: Option<String>,
}

/// A template name in a path: a sendable name, a partial (`_footer`) or `layout`.
fn path_name(raw: &str) -> Result<String, ApiError> {
    let sendable = raw.strip_prefix('_').unwrap_or(raw);
    TemplateName::parse(sendable)
        .map(|_| raw.to_owned())
        .map_err(|message| invalid("name", message))
}

/// The locale of a query or body, lower-cased as stored; empty for the default.
fn locale(raw: Option<&str>, field: &str) -> Result<String, ApiError> {
    match raw {
        None | Some("") => Ok(String::new()),
        Some(raw) => Locale::parse(raw)
            .map(|l| l.as_str().to_ascii_lowercase())
            .map_err(|message| invalid(field, message)),
    }
}

fn parse_template(name: &str, body: &Value) -> Result<NewTemplate, FieldErrors> {
    let mut fields = Fields::of(body)?;
    let subject = match fields.raw("subject") {
        Some(value) => match parse::text(value, SUBJECT_MAX, false) {
            Ok(subject) => Some(subject),
            Err(message) => {
                fields.error("subject", message);
                None
            }
        },
        // A template without a subject takes each send's (or fails that send, saying so).
        None => None,
    };
    let body_text = |fields: &mut Fields, field: &str| match fields.raw(field) {
        Some(value) => match parse::text(value, BODY_MAX, true) {
            Ok(text) => Some(text),
            Err(message) => {
                fields.error(field, message);
                None
            }
        },
        None => None,
    };
    let html = body_text(&mut fields, "html");
    if fields.raw("html").is_none() {
        fields.error("html", "is required");
    }
    let text = body_text(&mut fields, "text");
    let locale = fields.optional::<Locale>("locale");
    let sample_data = fields.optional::<Map<String, Value>>("sampleData");
    fields.finish(|| {
        Some(NewTemplate {
            name: name.to_owned(),
            locale: locale.map_or_else(String::new, |l| l.as_str().to_ascii_lowercase()),
            subject,
            html: html?,
            text,
            sample_data: sample_data.map(|d| Value::Object(d).to_string()),
        })
    })
}

/// The tenant's templates: its own (newest version of each) and the built-in names.
#[utoipa::path(get, path = "/v1/templates", tag = "templates", security(("api_key" = [])),
    responses((status = 200, body = TemplateList), KeyRefusals))]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<Json<TemplateList>, ApiError> {
    let own = state.stores.templates.current_templates(&tenant).await?;
    Ok(Json(TemplateList {
        items: own
            .into_iter()
            .map(|t| TemplateView::of(t, Vec::new()))
            .collect(),
        built_in: state.templates.built_in_names(),
    }))
}

/// Writes a new version of a template (201 for the first, 200 after). A template that
/// does not compile is refused with 422 naming the part, line and column.
#[utoipa::path(put, path = "/v1/templates/{name}", tag = "templates", security(("api_key" = [])),
    params(TemplatePath),
    request_body = TemplateBody,
    responses((status = 200, body = TemplateView), (status = 201, body = TemplateView),
        KeyRefusals, BodyRefusals))]
pub async fn put(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<TemplateView>), ApiError> {
    let name = path_name(&name)?;
    let template = parse_template(&name, &body)?;
    if let Err(errors) = templates::check(&template) {
        return Err(ApiError::Validation(FieldErrors(
            errors
                .into_iter()
                .map(|e| FieldError {
                    field: e.part.to_owned(),
                    message: format!("does not compile: {e}"),
                })
                .collect(),
        )));
    }
    check_before_storing(&state, &tenant, &template).await?;
    let store = &state.stores.templates;
    let stored = store.put_template(&tenant, &template).await?;
    state.templates.forget(&tenant);
    let versions = store
        .template_versions(&tenant, &name, &template.locale)
        .await?;
    let status = if stored.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(TemplateView::of(stored, versions))))
}

/// Checks a template about to be stored among the tenant's others, rather than failing
/// every send later: its partials may not include each other, and its sample data, if
/// any, must render within the render limits, as a preview would. Other render errors are
/// left to preview, since sample data may be partial.
async fn check_before_storing(
    state: &AppState,
    tenant: &crate::domain::TenantId,
    template: &NewTemplate,
) -> Result<(), ApiError> {
    let registry = state.templates.registry(tenant, true).await?;
    let candidate = registry
        .with_template(template)
        .map_err(|e| invalid("html", e.to_string()))?;
    candidate
        .check_partials()
        .map_err(|e| invalid("html", e.to_string()))?;
    let sample = template
        .sample_data
        .as_deref()
        .and_then(|d| serde_json::from_str::<Map<String, Value>>(d).ok());
    let Some(sample) = sample else {
        return Ok(());
    };
    if template.name == LAYOUT || template.name.starts_with('_') {
        return Ok(());
    }
    match candidate.render(&template.name, Some(&template.locale), &sample, None) {
        Err(e @ RenderError::Limit { .. }) => Err(invalid("sampleData", e.to_string())),
        _ => Ok(()),
    }
}

/// One version of a template (the newest unless `version` is given), with the list of
/// its versions.
#[utoipa::path(get, path = "/v1/templates/{name}", tag = "templates", security(("api_key" = [])),
    params(TemplatePath, TemplateParams),
    responses((status = 200, body = TemplateView), (status = 404, body = ErrorBody), KeyRefusals, InputRefusals))]
pub async fn show(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path(name): Path<String>,
    query: Result<Query<TemplateParams>, QueryRejection>,
) -> Result<Json<TemplateView>, ApiError> {
    let Query(params) = query.map_err(|e| invalid("query", e.body_text()))?;
    let name = path_name(&name)?;
    let locale = locale(params.locale.as_deref(), "locale")?;
    let version = params
        .version
        .as_deref()
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| invalid("version", "must be a whole number from 1"))
        })
        .transpose()?;
    let store = &state.stores.templates;
    let Some(stored) = store.template(&tenant, &name, &locale, version).await? else {
        let hint = if state.templates.is_built_in(&name) {
            " (it is built in; PUT a template of this name to replace it)"
        } else {
            ""
        };
        return Err(ApiError::NotFound(format!("template {name}{hint}")));
    };
    let versions = store.template_versions(&tenant, &name, &locale).await?;
    Ok(Json(TemplateView::of(stored, versions)))
}

/// Deletes every version of a template: in one locale with `?locale=`, else in all.
#[utoipa::path(delete, path = "/v1/templates/{name}", tag = "templates", security(("api_key" = [])),
    params(TemplatePath, LocaleParams),
    responses((status = 204), (status = 404, body = ErrorBody), KeyRefusals, InputRefusals))]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path(name): Path<String>,
    query: Result<Query<LocaleParams>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(params) = query.map_err(|e| invalid("query", e.body_text()))?;
    let name = path_name(&name)?;
    let locale = match params.locale.as_deref() {
        None => None,
        some => Some(locale(some, "locale")?),
    };
    let deleted = state
        .stores
        .templates
        .delete_template(&tenant, &name, locale.as_deref())
        .await?;
    state.templates.forget(&tenant);
    if deleted == 0 {
        return Err(ApiError::NotFound(format!("template {name}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Renders a template (the tenant's own, else the built-in one) as a send would, and
/// sends nothing.
#[utoipa::path(post, path = "/v1/templates/{name}/preview", tag = "templates", security(("api_key" = [])),
    params(TemplatePath),
    request_body = PreviewBody,
    responses((status = 200, body = PreviewView), (status = 404, body = ErrorBody), KeyRefusals, BodyRefusals))]
pub async fn preview(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<PreviewView>, ApiError> {
    let mut fields = Fields::of(&body)?;
    let data = fields.optional::<Map<String, Value>>("data");
    let requested = fields.optional::<Locale>("locale");
    fields.finish(|| Some(()))?;
    let name = TemplateName::parse(&name).map_err(|message| invalid("name", message))?;
    let locale = requested.as_ref().map(Locale::as_str);
    let data = match data {
        Some(data) => data,
        None => sample_data(&state, &tenant, name.as_str(), locale).await?,
    };
    let registry = state.templates.registry(&tenant, true).await?;
    match registry.render(name.as_str(), locale, &data, None) {
        Ok((
            Rendered {
                subject,
                html,
                text,
            },
            template,
        )) => Ok(Json(PreviewView {
            subject,
            html,
            text,
            template,
        })),
        Err(RenderError::Unknown(_)) => {
            Err(ApiError::NotFound(format!("template {}", name.as_str())))
        }
        Err(RenderError::Store(e)) => Err(e.into()),
        Err(e) => Err(invalid("data", e.to_string())),
    }
}

/// The sample data of the template a preview in `locale` renders; empty if it has none.
async fn sample_data(
    state: &AppState,
    tenant: &crate::domain::TenantId,
    name: &str,
    locale: Option<&str>,
) -> Result<Map<String, Value>, ApiError> {
    let store = &state.stores.templates;
    for candidate in templates::locale_chain(locale) {
        if let Some(stored) = store.template(tenant, name, &candidate, None).await? {
            let data = stored
                .template
                .sample_data
                .and_then(|d| serde_json::from_str::<Map<String, Value>>(&d).ok());
            return Ok(data.unwrap_or_default());
        }
    }
    Ok(Map::new())
}
