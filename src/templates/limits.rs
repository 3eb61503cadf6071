//! The bounds of one render: how many bytes it may write and how long it may take,
//! enforced while it runs (a metered output, and an `each` that checks the clock).

use handlebars::{
    BlockContext, BlockParams, Context, Handlebars, Helper, HelperDef, HelperResult, Output,
    RenderContext, RenderErrorReason, Renderable,
};
use serde::Deserialize;
use serde_json::Value;
use std::cell::RefCell;
use std::time::{Duration, Instant};

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
pub(super) struct Metered;

impl Metered {
    pub(super) fn start(limits: RenderLimits) -> Self {
        BUDGET.set(Some(Budget {
            limits,
            bytes_left: limits.max_bytes,
            deadline: Instant::now() + limits.max_time,
            reached: None,
        }));
        Metered
    }

    /// The limit the render reached, if it stopped at one.
    pub(super) fn reached(&self) -> Option<RenderLimit> {
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
pub(super) struct MeteredEach;

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

/// Renders one part of a template into metered output, within the budget of the render
/// under way.
pub(super) fn metered_part(
    registry: &Handlebars<'static>,
    key: &str,
    context: &Context,
) -> Result<String, handlebars::RenderError> {
    let mut output = MeteredOutput(Vec::new());
    registry.render_with_context_to_write(key, context, &mut output)?;
    // Handlebars writes only the `&str`s it renders: the bytes are UTF-8.
    String::from_utf8(output.0).map_err(handlebars::RenderError::from)
}
