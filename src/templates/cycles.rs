//! Partials that include each other: handlebars does not stop them, and rendering one
//! would overflow the stack and abort the process, so they are found before any render.

use handlebars::{Handlebars, Template, template::TemplateElement};
use std::collections::HashMap;

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
pub(super) fn partial_cycle(registry: &Handlebars<'static>) -> Result<(), String> {
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
