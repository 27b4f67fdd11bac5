//! Mail templates: built-in English ones, overridable per locale from a directory, rendered
//! with a deliberately small `{{variable}}` language.
//!
//! # The language
//!
//! - `{{name}}` is replaced by the variable's value. In `.html` templates the value is
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
//! Every message: `product` (`mail.product_name`), `name` (the user's display name, may be
//! empty), `email` (the recipient address), `client_ip` (the address the application passed
//! with the request, may be empty), `at` (when the request or change happened, such as
//! `2025-01-31 14:05 UTC`).
//!
//! The reset mail also has: `link` (the reset link; it holds the token), `expires_at` (when
//! the link expires, same format as `at`) and `expires_in_minutes` (minutes left when the mail
//! is sent, rounded).
//!
//! # Overrides
//!
//! `mail.template_dir` holds one directory per locale, named by its language tag (matched
//! without regard to case, `_` read as `-`):
//!
//! ```text
//! <template_dir>/
//!   en/password_reset.txt       overrides the built-in English reset mail
//!   en/password_reset.html
//!   pt/password_reset.subject   optional: one line; otherwise mail.subjects.password_reset
//!   pt/password_reset.txt
//!   pt/password_reset.html
//!   pt-BR/password_changed.txt
//!   pt-BR/password_changed.html
//! ```
//!
//! A locale variant of a kind needs both `.txt` and `.html`, so the two parts of one message
//! are always in one language. Any other file name is refused (a misspelt override would
//! otherwise be silently ignored); dotfiles are skipped.
//!
//! # Choosing a locale
//!
//! The user's locale is tried, then each shorter prefix of it, then the same for
//! `mail.default_locale`: `pt-BR` → `pt` → `en`. The first locale with a variant of the kind
//! wins; if none has one, the built-in English template is used.

use std::collections::HashMap;
use std::path::Path;

use super::config::MailConfig;
use super::{MailKind, SetupError};

/// Variables every message has.
const COMMON_VARIABLES: &[&str] = &["product", "name", "email", "client_ip", "at"];

/// Variables only the reset mail has.
const RESET_VARIABLES: &[&str] = &["link", "expires_at", "expires_in_minutes"];

/// The largest template file read; a template is a page of text, so anything bigger is a
/// mistake (a wrong path), not a template.
const MAX_TEMPLATE_BYTES: u64 = 256 * 1024;

/// The locale the built-in templates are written in.
const BUILTIN_LOCALE: &str = "en";

/// Whether `name` is a variable of `kind`.
fn known(name: &str, kind: MailKind) -> bool {
    COMMON_VARIABLES.contains(&name)
        || (kind == MailKind::PasswordReset && RESET_VARIABLES.contains(&name))
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
            if kind == MailKind::PasswordReset {
                names.extend_from_slice(RESET_VARIABLES);
            }
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

/// One kind of message in one locale.
#[derive(Clone, Debug)]
struct Variant {
    /// The locale as its directory is named (`"en"` for the built-in ones), for the
    /// `Content-Language` header.
    locale: String,
    /// The subject; the configured one when absent.
    subject: Option<Template>,
    /// The text/plain part.
    text: Template,
    /// The text/html part.
    html: Template,
}

/// A message rendered, ready to be put together.
#[derive(Clone, Debug)]
pub(crate) struct Rendered {
    /// The locale of the variant used.
    pub locale: String,
    /// The subject, on one line.
    pub subject: String,
    /// The text/plain part.
    pub text: String,
    /// The text/html part.
    pub html: String,
}

/// Every template the sender may use, loaded and checked at start-up.
#[derive(Debug)]
pub(crate) struct Templates {
    /// `mail.default_locale`'s fallback chain, lowercased.
    default_chain: Vec<String>,
    /// The overrides, by lowercased locale and kind.
    variants: HashMap<(String, MailKind), Variant>,
    /// The built-in reset mail.
    builtin_reset: Variant,
    /// The built-in password-changed notice.
    builtin_changed: Variant,
    /// `mail.subjects.password_reset`.
    subject_reset: Template,
    /// `mail.subjects.password_changed`.
    subject_changed: Template,
}

impl Templates {
    /// Parses the built-in templates and the configured subjects, and loads the overrides
    /// from `mail.template_dir`.
    pub(crate) fn load(config: &MailConfig) -> Result<Templates, SetupError> {
        let subject = |kind| {
            let (key, text) = config.subjects.get(kind);
            Template::parse(text, kind).map_err(|reason| SetupError::Config { key, reason })
        };
        let variants = match &config.template_dir {
            Some(dir) => load_dir(dir)?,
            None => HashMap::new(),
        };
        Ok(Templates {
            default_chain: fallback_chain(&config.default_locale),
            variants,
            builtin_reset: builtin(
                MailKind::PasswordReset,
                include_str!("../../templates/en/password_reset.txt"),
                include_str!("../../templates/en/password_reset.html"),
            )?,
            builtin_changed: builtin(
                MailKind::PasswordChanged,
                include_str!("../../templates/en/password_changed.txt"),
                include_str!("../../templates/en/password_changed.html"),
            )?,
            subject_reset: subject(MailKind::PasswordReset)?,
            subject_changed: subject(MailKind::PasswordChanged)?,
        })
    }

    /// Renders `kind` for a user whose locale is `locale`.
    pub(crate) fn render(&self, kind: MailKind, locale: Option<&str>, vars: &Vars) -> Rendered {
        let variant = self.choose(kind, locale);
        let subject = variant.subject.as_ref().unwrap_or(match kind {
            MailKind::PasswordReset => &self.subject_reset,
            MailKind::PasswordChanged => &self.subject_changed,
        });
        Rendered {
            locale: variant.locale.clone(),
            subject: one_line(&subject.render(vars, false)),
            text: variant.text.render(vars, false),
            html: variant.html.render(vars, true),
        }
    }

    /// The variant for `kind` in the first locale of the fallback chain that has one.
    fn choose(&self, kind: MailKind, locale: Option<&str>) -> &Variant {
        let user_chain = locale.map(fallback_chain).unwrap_or_default();
        user_chain
            .iter()
            .chain(&self.default_chain)
            .find_map(|l| self.variants.get(&(l.clone(), kind)))
            .unwrap_or(match kind {
                MailKind::PasswordReset => &self.builtin_reset,
                MailKind::PasswordChanged => &self.builtin_changed,
            })
    }
}

/// A built-in variant. They are checked by a unit test, so an error here means a broken
/// build, reported rather than panicking.
fn builtin(kind: MailKind, text: &str, html: &str) -> Result<Variant, SetupError> {
    let parse = |source| {
        Template::parse(source, kind).map_err(|reason| SetupError::Config {
            key: "built-in templates",
            reason,
        })
    };
    Ok(Variant {
        locale: BUILTIN_LOCALE.into(),
        subject: None,
        text: parse(text)?,
        html: parse(html)?,
    })
}

/// `pt-BR` → `["pt-br", "pt"]`.
fn fallback_chain(locale: &str) -> Vec<String> {
    let mut tag = locale.trim().replace('_', "-").to_ascii_lowercase();
    let mut chain = Vec::new();
    while !tag.is_empty() {
        chain.push(tag.clone());
        match tag.rfind('-') {
            Some(i) => tag.truncate(i),
            None => break,
        }
    }
    chain
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

/// Collapses a rendered subject to one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The parts of one kind found in one locale directory.
#[derive(Default)]
struct Found {
    subject: Option<Template>,
    text: Option<Template>,
    html: Option<Template>,
}

/// Loads every locale directory under `dir`.
fn load_dir(dir: &Path) -> Result<HashMap<(String, MailKind), Variant>, SetupError> {
    let template_err = |path: &Path, reason: String| SetupError::Template {
        path: path.to_path_buf(),
        reason,
    };
    let read_err = |path: &Path, source| SetupError::Read {
        key: "mail.template_dir",
        path: path.to_path_buf(),
        source,
    };
    let mut variants = HashMap::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| read_err(dir, e))? {
        let entry = entry.map_err(|e| read_err(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if !path.is_dir() || !is_locale_tag(&name) {
            return Err(template_err(
                &path,
                "expected only locale directories (such as en/ or pt-BR/) here".into(),
            ));
        }
        let locale = name.replace('_', "-").to_ascii_lowercase();
        if let Some(other) = seen.insert(locale.clone(), name.clone()) {
            return Err(template_err(
                &path,
                format!("the same locale as {other}/ (locales are matched without case)"),
            ));
        }
        let mut found: HashMap<MailKind, Found> = HashMap::new();
        for file in std::fs::read_dir(&path).map_err(|e| read_err(&path, e))? {
            let file = file.map_err(|e| read_err(&path, e))?;
            let file_path = file.path();
            let file_name = file.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') {
                continue;
            }
            let Some((kind, part)) = part_of(&file_name) else {
                return Err(template_err(
                    &file_path,
                    "unexpected file: expected password_reset or password_changed, with \
                     .txt, .html or .subject"
                        .into(),
                ));
            };
            let source = read_template(&file_path).map_err(|e| read_err(&file_path, e))?;
            let template =
                Template::parse(&source, kind).map_err(|r| template_err(&file_path, r))?;
            let slot = found.entry(kind).or_default();
            match part {
                Part::Subject => {
                    if source.trim().is_empty() || source.trim().contains('\n') {
                        return Err(template_err(&file_path, "must be one line".into()));
                    }
                    slot.subject = Some(template);
                }
                Part::Text => slot.text = Some(template),
                Part::Html => slot.html = Some(template),
            }
        }
        for (kind, parts) in found {
            let missing = |ext| {
                template_err(
                    &path.join(format!("{}.{ext}", kind.name())),
                    "is missing: a locale variant needs both .txt and .html".into(),
                )
            };
            let text = parts.text.ok_or_else(|| missing("txt"))?;
            let html = parts.html.ok_or_else(|| missing("html"))?;
            let variant = Variant {
                locale: name.replace('_', "-"),
                subject: parts.subject,
                text,
                html,
            };
            variants.insert((locale.clone(), kind), variant);
        }
    }
    Ok(variants)
}

/// Which part of a message a template file is.
enum Part {
    Subject,
    Text,
    Html,
}

/// `password_reset.txt` → the reset mail's text part.
fn part_of(file_name: &str) -> Option<(MailKind, Part)> {
    let (stem, ext) = file_name.rsplit_once('.')?;
    let kind = [MailKind::PasswordReset, MailKind::PasswordChanged]
        .into_iter()
        .find(|k| k.name() == stem)?;
    let part = match ext {
        "subject" => Part::Subject,
        "txt" => Part::Text,
        "html" => Part::Html,
        _ => return None,
    };
    Some((kind, part))
}

/// Reads a template file, refusing huge ones and text that is not UTF-8.
fn read_template(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_TEMPLATE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_TEMPLATE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_TEMPLATE_BYTES} bytes"
        )));
    }
    String::from_utf8(bytes).map_err(|_| std::io::Error::other("not UTF-8 text"))
}

/// A Unix time as `2025-01-31 14:05 UTC`.
pub(crate) fn utc(secs: u64) -> String {
    let days = secs / 86400;
    let rem = secs % 86400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is how a test fails
mod tests {
    use super::*;

    fn vars(pairs: &[(&'static str, &str)]) -> Vars {
        let mut vars = Vars::default();
        for (name, value) in pairs {
            vars.set(name, *value);
        }
        vars
    }

    fn render(source: &str, pairs: &[(&'static str, &str)], html: bool) -> String {
        Template::parse(source, MailKind::PasswordReset)
            .unwrap()
            .render(&vars(pairs), html)
    }

    #[test]
    fn substitutes_and_escapes_only_in_html() {
        let source = "<a href=\"{{ link }}\">{{name}}</a>";
        let pairs = [
            ("link", "https://x/?a=1&b=\"2\""),
            ("name", "<Ada & 'Bob'>"),
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
        let source = "Hello{{#name}} {{name}}{{/name}},\n{{#client_ip}}\nFrom {{client_ip}}.\n{{/client_ip}}\nBye\n";
        assert_eq!(
            render(
                source,
                &[("name", "Ada"), ("client_ip", "192.0.2.1")],
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
        assert!(err("{{link", reset).contains("never closed"));
        assert!(err("{{#name}}x", reset).contains("{{#name}} is never closed"));
        assert!(err("{{#name}}{{/email}}", reset).contains("closes {{#name}}"));
        assert!(err("{{/name}}", reset).contains("has no {{#name}}"));
    }

    #[test]
    fn builtin_templates_parse_and_mention_their_variables() {
        let templates = Templates::load(&MailConfig::default()).unwrap();
        let mut v = vars(&[
            ("product", "Acme"),
            ("name", "Ada"),
            ("email", "ada@example.com"),
            ("link", "https://app.example/reset?token=T&x=1"),
            ("expires_at", "2025-01-31 14:35 UTC"),
            ("expires_in_minutes", "30"),
            ("at", "2025-01-31 14:05 UTC"),
        ]);
        let reset = templates.render(MailKind::PasswordReset, None, &v);
        assert_eq!(reset.locale, "en");
        assert_eq!(reset.subject, "Reset your Acme password");
        assert!(reset
            .text
            .contains("\nhttps://app.example/reset?token=T&x=1\n"));
        assert!(reset
            .html
            .contains("href=\"https://app.example/reset?token=T&amp;x=1\""));
        assert!(reset.text.contains("expires in 30 minutes"));
        assert!(!reset.text.contains("request came from"));
        v.set("client_ip", "192.0.2.1");
        let changed = templates.render(MailKind::PasswordChanged, Some("de"), &v);
        assert_eq!(changed.subject, "Your Acme password was changed");
        assert!(changed.text.contains("The change came from 192.0.2.1."));
        assert!(!changed.html.contains("{{"));
    }

    #[test]
    fn locales_fall_back_to_shorter_tags_then_the_default() {
        assert_eq!(fallback_chain("pt_BR"), ["pt-br", "pt"]);
        assert_eq!(
            fallback_chain("zh-Hant-TW"),
            ["zh-hant-tw", "zh-hant", "zh"]
        );
        let dir = tempfile::tempdir().unwrap();
        for (locale, word) in [("pt", "Olá"), ("DE", "Hallo")] {
            let sub = dir.path().join(locale);
            std::fs::create_dir(&sub).unwrap();
            std::fs::write(
                sub.join("password_changed.txt"),
                format!("{word} {{{{name}}}}"),
            )
            .unwrap();
            std::fs::write(sub.join("password_changed.html"), format!("<p>{word}</p>")).unwrap();
        }
        std::fs::write(dir.path().join("pt/password_changed.subject"), "Senha\n").unwrap();
        let config = MailConfig {
            template_dir: Some(dir.path().to_path_buf()),
            default_locale: "de-AT".into(),
            ..MailConfig::default()
        };
        let templates = Templates::load(&config).unwrap();
        let v = vars(&[("name", "Ana"), ("product", "Acme")]);
        let pt = templates.render(MailKind::PasswordChanged, Some("pt-BR"), &v);
        assert_eq!((pt.locale.as_str(), pt.subject.as_str()), ("pt", "Senha"));
        assert_eq!(pt.text, "Olá Ana");
        let fr = templates.render(MailKind::PasswordChanged, Some("fr"), &v);
        assert_eq!((fr.locale.as_str(), fr.text.as_str()), ("DE", "Hallo Ana"));
        assert_eq!(fr.subject, "Your Acme password was changed");
        let reset = templates.render(MailKind::PasswordReset, Some("pt"), &v);
        assert_eq!(reset.locale, "en", "no pt reset variant: the built-in one");
    }

    #[test]
    fn a_broken_override_directory_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = MailConfig {
            template_dir: Some(dir.path().to_path_buf()),
            ..MailConfig::default()
        };
        std::fs::create_dir(dir.path().join("en")).unwrap();
        std::fs::write(dir.path().join("en/password_reset.txt"), "{{link}}").unwrap();
        let err = Templates::load(&config).unwrap_err().to_string();
        assert!(
            err.contains("password_reset.html") && err.contains("missing"),
            "{err}"
        );
        std::fs::write(dir.path().join("en/pasword_reset.html"), "x").unwrap();
        let err = Templates::load(&config).unwrap_err().to_string();
        assert!(
            err.contains("pasword_reset.html") && err.contains("unexpected"),
            "{err}"
        );
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_738_332_300), "2025-01-31 14:05 UTC");
    }
}
