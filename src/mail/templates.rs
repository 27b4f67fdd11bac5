//! Mail templates: built-in English ones, overridable per locale from a directory, in the
//! `{{variable}}` language of `template`.
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
//! The kinds are `password_reset`, `password_changed`, `sign_up_confirm` (the link that
//! finishes a concealed sign-up) and `sign_up_existing` (the notice to the owner of an address
//! somebody tried to sign up with); each has a built-in English template in `templates/en/`.
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
use super::template::{is_locale_tag, Template, Vars};
use super::{MailKind, SetupError};

/// The largest template file read; a template is a page of text, so anything bigger is a
/// mistake (a wrong path), not a template.
const MAX_TEMPLATE_BYTES: u64 = 256 * 1024;

/// The locale the built-in templates are written in.
const BUILTIN_LOCALE: &str = "en";

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
    /// The built-in variants, in [`MailKind::ALL`] order.
    builtin: [Variant; 4],
    /// `mail.subjects`, in [`MailKind::ALL`] order.
    subjects: [Template; 4],
}

/// The built-in English templates, text and HTML, in [`MailKind::ALL`] order.
const BUILTIN: [(&str, &str); 4] = [
    (
        include_str!("../../templates/en/password_reset.txt"),
        include_str!("../../templates/en/password_reset.html"),
    ),
    (
        include_str!("../../templates/en/password_changed.txt"),
        include_str!("../../templates/en/password_changed.html"),
    ),
    (
        include_str!("../../templates/en/sign_up_confirm.txt"),
        include_str!("../../templates/en/sign_up_confirm.html"),
    ),
    (
        include_str!("../../templates/en/sign_up_existing.txt"),
        include_str!("../../templates/en/sign_up_existing.html"),
    ),
];

/// The position of `kind` in [`MailKind::ALL`].
fn index(kind: MailKind) -> usize {
    MailKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

impl Templates {
    /// Parses the built-in templates, takes the configured subjects (parsed when the
    /// configuration was read), and loads the overrides from `mail.template_dir`.
    pub(crate) fn load(config: &MailConfig) -> Result<Templates, SetupError> {
        let variants = match &config.template_dir {
            Some(dir) => load_dir(dir)?,
            None => HashMap::new(),
        };
        let mut builtins = Vec::with_capacity(BUILTIN.len());
        for (kind, (text, html)) in MailKind::ALL.into_iter().zip(BUILTIN) {
            builtins.push(builtin(kind, text, html)?);
        }
        let builtin = builtins.try_into().map_err(|_| SetupError::Config {
            key: "built-in templates",
            reason: "one template per kind".into(),
        })?;
        Ok(Templates {
            default_chain: fallback_chain(&config.default_locale),
            variants,
            builtin,
            subjects: MailKind::ALL.map(|kind| config.subjects.get(kind).clone()),
        })
    }

    /// Renders `kind` for a user whose locale is `locale`.
    pub(crate) fn render(&self, kind: MailKind, locale: Option<&str>, vars: &Vars) -> Rendered {
        let variant = self.choose(kind, locale);
        let subject = variant
            .subject
            .as_ref()
            .unwrap_or(&self.subjects[index(kind)]);
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
            .unwrap_or(&self.builtin[index(kind)])
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
                    "unexpected file: expected password_reset, password_changed, \
                     sign_up_confirm or sign_up_existing, with .txt, .html or .subject"
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
    let kind = MailKind::ALL.into_iter().find(|k| k.name() == stem)?;
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

/// A Unix time as `2025-01-31 14:05 UTC`; one beyond the year 9999 as `Unix time N`.
pub(crate) fn utc(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .and_then(|t| jiff::fmt::strtime::format("%Y-%m-%d %H:%M UTC", t).ok())
        .unwrap_or_else(|| format!("Unix time {secs}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::template::vars;

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
                format!("{word} {{{{email}}}}"),
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
        let v = vars(&[("email", "Ana"), ("product", "Acme")]);
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
