//! A plain-text body derived from an HTML body, for templates that give none: the text of
//! the document with block elements on their own lines and links written out. Good enough
//! for the text part of a transactional email; not a general HTML renderer.

/// Elements that end a line of text.
const BLOCKS: [&str; 17] = [
    "p",
    "div",
    "br",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "li",
    "tr",
    "table",
    "ul",
    "ol",
    "blockquote",
    "hr",
    "section",
];

/// Elements whose content is not text.
const HIDDEN: [&str; 3] = ["head", "style", "script"];

/// The text of `html`.
pub fn from_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    let mut hidden: Option<String> = None;
    let mut link: Option<String> = None;
    while let Some(open) = rest.find('<') {
        if hidden.is_none() {
            push_text(&mut out, &rest[..open]);
        }
        let Some(close) = rest[open..].find('>') else {
            rest = &rest[open..];
            break;
        };
        let tag = &rest[open + 1..open + close];
        rest = &rest[open + close + 1..];
        let closing = tag.starts_with('/');
        let name = tag
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if let Some(open_hidden) = &hidden {
            if closing && *open_hidden == name {
                hidden = None;
            }
            continue;
        }
        if HIDDEN.contains(&name.as_str()) && !closing {
            hidden = Some(name);
            continue;
        }
        if name == "a" {
            if closing {
                if let Some(href) = link.take()
                    && !out.ends_with(&href)
                {
                    out.push_str(&format!(" ({href})"));
                }
            } else {
                link = attribute(tag, "href").filter(|h| !h.starts_with('#'));
            }
        } else if name == "li" && !closing {
            new_line(&mut out);
            out.push_str("- ");
        } else if BLOCKS.contains(&name.as_str()) {
            new_line(&mut out);
            if matches!(name.as_str(), "p" | "h1" | "h2" | "h3" | "table") && closing {
                out.push('\n');
            }
        }
    }
    if hidden.is_none() {
        push_text(&mut out, rest);
    }
    let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
    // At most one blank line in a row, none at either end.
    let mut text = String::with_capacity(out.len());
    for line in lines {
        if line.is_empty() && (text.is_empty() || text.ends_with("\n\n")) {
            continue;
        }
        text.push_str(line);
        text.push('\n');
    }
    text.trim_end().to_owned() + "\n"
}

/// Appends text content, collapsing whitespace as a browser does and decoding entities.
fn push_text(out: &mut String, raw: &str) {
    let decoded = decode_entities(raw);
    for (i, word) in decoded.split_whitespace().enumerate() {
        let at_line_start = out.is_empty() || out.ends_with('\n');
        let starts_with_space = decoded.starts_with(char::is_whitespace);
        if !at_line_start && (i > 0 || starts_with_space) && !out.ends_with(' ') {
            out.push(' ');
        }
        out.push_str(word);
    }
    if decoded.ends_with(char::is_whitespace) && !decoded.trim().is_empty() {
        out.push(' ');
    }
}

fn new_line(out: &mut String) {
    while out.ends_with(' ') {
        out.pop();
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

/// The value of attribute `name` in a tag's source.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let at = lower.find(&format!("{name}="))? + name.len() + 1;
    let value = &tag[at..];
    let value = match value.chars().next()? {
        quote @ ('"' | '\'') => value[1..].split(quote).next()?,
        _ => value.split(char::is_whitespace).next()?,
    };
    Some(decode_entities(value))
}

fn decode_entities(raw: &str) -> String {
    if !raw.contains('&') {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').filter(|&end| end <= 10).and_then(|end| {
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" | "#x27" => Some('\''),
                "nbsp" => Some(' '),
                "#x60" => Some('`'),
                "#x3D" => Some('='),
                _ => entity
                    .strip_prefix('#')
                    .and_then(|n| n.parse::<u32>().ok())
                    .and_then(char::from_u32),
            }?;
            Some((c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::from_html;

    #[test]
    fn blocks_become_lines_links_are_written_out_and_entities_decoded() {
        let html = "<!doctype html><html><head><style>p { color: red }</style></head><body>\n\
            <h1>Hello,   Ada &amp; Bob</h1>\n<p>Your code is <b>42</b>.<br>Thanks</p>\
            <ul><li>one</li><li>two</li></ul>\
            <p><a href=\"https://example.com/x?a=1&amp;b=2\">Open it</a></p></body></html>";
        assert_eq!(
            from_html(html),
            "Hello, Ada & Bob\n\nYour code is 42.\nThanks\n\n- one\n- two\n\
             Open it (https://example.com/x?a=1&b=2)\n"
        );
    }

    #[test]
    fn a_link_whose_text_is_its_address_is_written_once() {
        assert_eq!(
            from_html("<p><a href=\"https://x.io\">https://x.io</a></p>"),
            "https://x.io\n"
        );
    }
}
