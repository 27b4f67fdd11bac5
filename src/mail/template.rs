//! The deliberately small `{{variable}}` language mail templates and subjects are written in:
//! parsing (with every variable checked against the message kind) and rendering.
//!
//! # The language
//!
//! - `{{email}}` is replaced by the variable's value. In `.html` templates the value is
//!   HTML-escaped (`& < > " '`), so it is safe in text and in quoted attributes such as
//!   `href="{{link}}"`; in `.txt` and `.subject` templates it is inserted as is.
//! - `{{#name}}…{{/name}}` keeps its content only when the variable is not empty (for example
//!   `{{#client_ip}}The request came from {{client_ip}}.{{/client_ip}}`). A section tag alone
//!   on its line takes the whole line with it, as in Mustache.
//! - Anything else is literal text. An unknown variable, or one the message kind does not
//!   have, is an error when the templates are loaded, not a blank in a sent mail.
//!
//! # Variables
//!
//! Every message: `product` (`mail.product_name`), `email` (the recipient address), `client_ip` (the address the application passed
//! with the request, may be empty), `at` (when the request or change happened, such as
//! `2025-01-31 14:05 UTC`).
//!
//! The reset mail also has: `link` (the reset link; it holds the token), `expires_at` (when
//! the link expires, same format as `at`) and `expires_in_minutes` (minutes left when the mail
//! is sent, rounded).
//!

use super::MailKind;

/// Variables every message has.
const COMMON_VARIABLES: &[&str] = &["product", "email", "client_ip", "at"];

/// Variables of the mails with an expiring link (reset, sign-up).
const LINK_VARIABLES: &[&str] = &["link", "expires_at", "expires_in_minutes"];

/// The variables of `kind` beyond the common ones.
fn kind_variables(kind: MailKind) -> &'static [&'static str] {
    match kind {
        MailKind::PasswordReset | MailKind::SignUpConfirm => LINK_VARIABLES,
        MailKind::SignUpExisting => &["link"],
        MailKind::PasswordChanged => &[],
    }
}

/// Whether `name` is a variable of `kind`.
fn known(name: &str, kind: MailKind) -> bool {
    COMMON_VARIABLES.contains(&name) || kind_variables(kind).contains(&name)
}

/// A parsed template.
#[derive(Clone, Debug)]
pub(crate) struct Template {
    /// The parts, in order.
    nodes: Vec<Node>,
}

/// A part of a template.
#[derive(Clone, Debug, PartialEq)]
enum Node {
    /// Literal text.
    Text(String),
    /// `{{name}}`.
    Var(String),
    /// `{{#name}}…{{/name}}`.
    Section(String, Vec<Node>),
}

/// A tag or a run of text, before sections are nested.
#[derive(Debug, PartialEq)]
enum Token {
    Text(String),
    Var(String),
    Open(String),
    Close(String),
}

impl Template {
    /// A template of literal text only.
    pub(crate) fn literal(text: &str) -> Template {
        Template {
            nodes: vec![Node::Text(text.to_owned())],
        }
    }

    /// Parses `source`, allowing the variables of `kind`. The error says what is wrong and
    /// where (as a line number).
    pub(crate) fn parse(source: &str, kind: MailKind) -> Result<Template, String> {
        let mut tokens = tokenize(source, kind)?;
        strip_standalone_sections(&mut tokens);
        let mut stack: Vec<(String, Vec<Node>)> = Vec::new();
        let mut nodes = Vec::new();
        for token in tokens {
            match token {
                Token::Text(text) => nodes.push(Node::Text(text)),
                Token::Var(name) => nodes.push(Node::Var(name)),
                Token::Open(name) => stack.push((name, std::mem::take(&mut nodes))),
                Token::Close(name) => match stack.pop() {
                    Some((open, outer)) if open == name => {
                        let inner = std::mem::replace(&mut nodes, outer);
                        nodes.push(Node::Section(name, inner));
                    }
                    Some((open, _)) => {
                        return Err(format!("{{{{/{name}}}}} closes {{{{#{open}}}}}"));
                    }
                    None => return Err(format!("{{{{/{name}}}}} has no {{{{#{name}}}}}")),
                },
            }
        }
        if let Some((open, _)) = stack.pop() {
            return Err(format!("{{{{#{open}}}}} is never closed"));
        }
        Ok(Template { nodes })
    }

    /// The template with `vars` filled in; values HTML-escaped when `html`.
    pub(crate) fn render(&self, vars: &Vars, html: bool) -> String {
        let mut out = String::new();
        render_nodes(&self.nodes, vars, html, &mut out);
        out
    }
}

/// Splits `source` into text and tags, checking every variable name.
fn tokenize(source: &str, kind: MailKind) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            tokens.push(Token::Text(rest[..start].to_owned()));
        }
        let line = source[..source.len() - rest.len() + start]
            .matches('\n')
            .count()
            + 1;
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!("line {line}: \"{{{{\" is never closed by \"}}}}\""));
        };
        let tag = after[..end].trim();
        let (make, name): (fn(String) -> Token, &str) = match tag.as_bytes().first() {
            Some(b'#') => (Token::Open, tag[1..].trim()),
            Some(b'/') => (Token::Close, tag[1..].trim()),
            _ => (Token::Var, tag),
        };
        if !known(name, kind) {
            let mut names: Vec<&str> = COMMON_VARIABLES.to_vec();
            names.extend_from_slice(kind_variables(kind));
            return Err(format!(
                "line {line}: unknown variable {{{{{name}}}}} (a {} mail has: {})",
                kind.name(),
                names.join(", ")
            ));
        }
        tokens.push(make(name.to_owned()));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        tokens.push(Token::Text(rest.to_owned()));
    }
    Ok(tokens)
}

/// Drops the line of every section tag that stands alone on its line (only blanks around
/// it), so sections can be written on lines of their own without leaving empty lines.
fn strip_standalone_sections(tokens: &mut [Token]) {
    for i in 0..tokens.len() {
        if !matches!(tokens[i], Token::Open(_) | Token::Close(_)) {
            continue;
        }
        let before_ok = match i.checked_sub(1).map(|j| &tokens[j]) {
            None => true,
            Some(Token::Text(t)) => {
                let tail = t.rsplit('\n').next().unwrap_or_default();
                (t.contains('\n') || i == 1) && tail.chars().all(|c| c == ' ' || c == '\t')
            }
            Some(_) => false,
        };
        let after_ok = match tokens.get(i + 1) {
            None => true,
            Some(Token::Text(t)) => {
                let head = t.split('\n').next().unwrap_or_default();
                (t.contains('\n') || i + 2 == tokens.len())
                    && head.chars().all(|c| c == ' ' || c == '\t' || c == '\r')
            }
            Some(_) => false,
        };
        if !(before_ok && after_ok) {
            continue;
        }
        if let Some(Token::Text(t)) = i.checked_sub(1).map(|j| &mut tokens[j]) {
            let keep = t.rfind('\n').map_or(0, |n| n + 1);
            t.truncate(keep);
        }
        if let Some(Token::Text(t)) = tokens.get_mut(i + 1) {
            let drop = t.find('\n').map_or(t.len(), |n| n + 1);
            t.drain(..drop);
        }
    }
}

/// Appends `nodes`, filled in, to `out`.
fn render_nodes(nodes: &[Node], vars: &Vars, html: bool, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Var(name) if html => escape_html(vars.get(name), out),
            Node::Var(name) => out.push_str(vars.get(name)),
            Node::Section(name, inner) => {
                if !vars.get(name).is_empty() {
                    render_nodes(inner, vars, html, out);
                }
            }
        }
    }
}

/// Appends `value` to `out` with the characters that mean something in HTML text and quoted
/// attributes escaped.
fn escape_html(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// The values a message is rendered with.
#[derive(Debug, Default)]
pub(crate) struct Vars {
    /// Name and value pairs; few enough that a scan beats a map.
    values: Vec<(&'static str, String)>,
}

impl Vars {
    /// Sets `name` to `value`.
    pub(crate) fn set(&mut self, name: &'static str, value: impl Into<String>) {
        self.values.push((name, value.into()));
    }

    /// The value of `name`; empty when unset.
    fn get(&self, name: &str) -> &str {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Whether `tag` looks like a language tag (letters, digits, `-` or `_`, starting with a
/// letter, at most 35 bytes), the same rule the service applies to users' locales.
pub(crate) fn is_locale_tag(tag: &str) -> bool {
    tag.len() <= 35
        && tag.starts_with(|c: char| c.is_ascii_alphabetic())
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Variables with these values, for tests.
#[cfg(test)]
pub(crate) fn vars(pairs: &[(&'static str, &str)]) -> Vars {
    let mut vars = Vars::default();
    for (name, value) in pairs {
        vars.set(name, *value);
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &str, pairs: &[(&'static str, &str)], html: bool) -> String {
        Template::parse(source, MailKind::PasswordReset)
            .unwrap()
            .render(&vars(pairs), html)
    }

    #[test]
    fn substitutes_and_escapes_only_in_html() {
        let source = "<a href=\"{{ link }}\">{{email}}</a>";
        let pairs = [
            ("link", "https://x/?a=1&b=\"2\""),
            ("email", "<Ada & 'Bob'>"),
        ];
        assert_eq!(
            render(source, &pairs, true),
            "<a href=\"https://x/?a=1&amp;b=&quot;2&quot;\">&lt;Ada &amp; &#39;Bob&#39;&gt;</a>"
        );
        assert_eq!(
            render(source, &pairs, false),
            "<a href=\"https://x/?a=1&b=\"2\"\"><Ada & 'Bob'></a>"
        );
    }

    #[test]
    fn sections_show_only_non_empty_values_and_standalone_tags_take_their_line() {
        let source = "Hello{{#email}} {{email}}{{/email}},\n{{#client_ip}}\nFrom {{client_ip}}.\n{{/client_ip}}\nBye\n";
        assert_eq!(
            render(
                source,
                &[("email", "Ada"), ("client_ip", "192.0.2.1")],
                false
            ),
            "Hello Ada,\nFrom 192.0.2.1.\nBye\n"
        );
        assert_eq!(render(source, &[], false), "Hello,\nBye\n");
    }

    #[test]
    fn mistakes_are_refused_with_their_line() {
        let reset = MailKind::PasswordReset;
        let changed = MailKind::PasswordChanged;
        let err = |source, kind| Template::parse(source, kind).unwrap_err();
        assert!(err("a\n{{nmae}}", reset).starts_with("line 2: unknown variable {{nmae}}"));
        assert!(err("{{link}}", changed).contains("unknown variable {{link}}"));
        // Display names reach no mail (issue 19, item 8).
        assert!(err("Hello {{name}}", reset).contains("unknown variable {{name}}"));
        assert!(err("{{link", reset).contains("never closed"));
        assert!(err("{{#email}}x", reset).contains("{{#email}} is never closed"));
        assert!(err("{{#email}}{{/at}}", reset).contains("closes {{#email}}"));
        assert!(err("{{/email}}", reset).contains("has no {{#email}}"));
    }
}
