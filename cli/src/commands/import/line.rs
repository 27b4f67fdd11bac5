//! One line of an import file: a JSON object, as latchkey names the fields or as a
//! `mongoexport` of a Node application's users writes them, read into an [`ImportUser`] or
//! refused with the reason. Nothing here talks to the daemon.

use latchkey_client::{ImportUser, UnixTime, UserStatus};

use crate::utc;

/// Why a line is not an account, before the daemon sees it.
#[derive(Debug)]
pub(crate) struct Problem {
    /// `InvalidJson`, `InvalidInput` or `TooLarge`.
    pub(crate) code: &'static str,
    /// What is wrong; never quotes the hash.
    pub(crate) message: String,
}

impl Problem {
    /// A problem with the given code.
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            code,
            message: message.into(),
        }
    }

    /// The line is not a JSON object (`InvalidJson`).
    pub(crate) fn json(message: impl Into<String>) -> Problem {
        Problem::new("InvalidJson", message)
    }

    /// The object is not an account (`InvalidInput`).
    fn input(message: impl Into<String>) -> Problem {
        Problem::new("InvalidInput", message)
    }
}

/// The JSON object of one line, as read.
type Fields = serde_json::Map<String, serde_json::Value>;

/// Where the password hash may be, in order of preference: latchkey's name, then the
/// names Node applications commonly give it.
const HASH_FIELDS: [&str; 4] = ["password_hash", "password", "passwordHash", "hash"];

/// Where the creation time may be.
const CREATED_FIELDS: [&str; 2] = ["created_at", "createdAt"];

/// Timestamps above this are milliseconds: as seconds it would be the year 5138, as
/// milliseconds it is March 1973, before any account being imported.
const MILLIS_ABOVE: f64 = 1e11;

/// One line of input as an account to import.
pub(crate) fn parse_line(text: &str) -> Result<ImportUser, Problem> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        // serde_json says "at line 1 column N"; within one line only the column helps.
        let message = e.to_string();
        let reason = message.split(" at line ").next().unwrap_or(&message);
        Problem::json(format!("not valid JSON: {reason} at column {}", e.column()))
    })?;
    let fields = match value {
        serde_json::Value::Object(fields) => fields,
        serde_json::Value::Array(_) => {
            return Err(Problem::json(
                "a JSON array, not an object: give one account per line (mongoexport \
                 without --jsonArray)",
            ))
        }
        _ => return Err(Problem::json("not a JSON object")),
    };
    let email = string(&fields, "email")?.ok_or_else(|| Problem::input("no email"))?;
    let missing_hash = || {
        Problem::input(format!(
            "{email}: no password hash (looked for {})",
            HASH_FIELDS.join(", ")
        ))
    };
    let password_hash = first_present(&fields, &HASH_FIELDS)
        .map(|(key, _)| string(&fields, key))
        .transpose()?
        .flatten()
        .ok_or_else(missing_hash)?;
    let created_at = match first_present(&fields, &CREATED_FIELDS) {
        Some((key, value)) => Some(
            timestamp(value)
                .map_err(|reason| Problem::input(format!("{email}: {key}: {reason}")))?,
        ),
        None => None,
    };
    Ok(ImportUser {
        name: string(&fields, "name")?.unwrap_or_default(),
        role: string(&fields, "role")?,
        status: status(&fields).map_err(|reason| Problem::input(format!("{email}: {reason}")))?,
        locale: string(&fields, "locale")?,
        created_at,
        password_hash,
        email,
    })
}

/// The first of `keys` present with a value other than `null`.
fn first_present<'a>(
    fields: &'a Fields,
    keys: &[&'static str],
) -> Option<(&'static str, &'a serde_json::Value)> {
    keys.iter()
        .find_map(|&key| fields.get(key).filter(|v| !v.is_null()).map(|v| (key, v)))
}

/// A string field; `None` when absent or `null`. The error names the field, never its
/// value, which may be the hash.
fn string(fields: &Fields, key: &str) -> Result<Option<String>, Problem> {
    match fields.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(Problem::input(format!("{key}: expected a string"))),
    }
}

/// The status from `status` ("active" or "disabled"), `disabled` or `active` (booleans);
/// `None` when none is given. Fields that disagree are refused rather than guessed at.
fn status(fields: &Fields) -> Result<Option<UserStatus>, String> {
    let named = match fields.get("status") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(name)) => Some(match name.trim() {
            s if s.eq_ignore_ascii_case("active") => UserStatus::Active,
            s if s.eq_ignore_ascii_case("disabled") => UserStatus::Disabled,
            _ => {
                return Err(format!(
                    "status: {name:?} is neither \"active\" nor \"disabled\""
                ))
            }
        }),
        Some(_) => return Err("status: expected \"active\" or \"disabled\"".into()),
    };
    let flag = |key: &str, when_true: UserStatus, when_false: UserStatus| match fields.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Bool(true)) => Ok(Some(when_true)),
        Some(serde_json::Value::Bool(false)) => Ok(Some(when_false)),
        Some(_) => Err(format!("{key}: expected true or false")),
    };
    let given = [
        ("status", named),
        (
            "disabled",
            flag("disabled", UserStatus::Disabled, UserStatus::Active)?,
        ),
        (
            "active",
            flag("active", UserStatus::Active, UserStatus::Disabled)?,
        ),
    ];
    let mut given = given.into_iter().filter_map(|(key, s)| s.map(|s| (key, s)));
    let first = given.next();
    if let Some((key, status)) = first {
        if let Some((other, _)) = given.find(|&(_, s)| s != status) {
            return Err(format!("{key} and {other} disagree"));
        }
    }
    Ok(first.map(|(_, status)| status))
}

/// The forms a creation time may take, for error messages.
const TIME_FORMS: &str = "Unix seconds or milliseconds, an RFC 3339 time, \
    {\"$date\": \"<RFC 3339 time>\"} or {\"$date\": {\"$numberLong\": \"<ms>\"}}";

/// A creation time in any of the accepted forms, as Unix seconds.
fn timestamp(value: &serde_json::Value) -> Result<UnixTime, String> {
    use serde_json::Value;
    let millis = |ms: f64| seconds(ms / 1000.0);
    match value {
        Value::Number(n) => {
            let n = n.as_f64().unwrap_or(f64::NAN);
            if n > MILLIS_ABOVE {
                millis(n)
            } else {
                seconds(n)
            }
        }
        Value::String(text) => rfc3339(text),
        Value::Object(object) => match object.get("$date") {
            Some(Value::String(text)) => rfc3339(text),
            Some(Value::Number(ms)) => millis(ms.as_f64().unwrap_or(f64::NAN)),
            Some(Value::Object(long)) => match long.get("$numberLong") {
                Some(Value::String(ms)) => match ms.trim().parse::<i64>() {
                    Ok(ms) => millis(ms as f64),
                    Err(_) => Err(format!("$numberLong {ms:?} is not a number")),
                },
                _ => Err(format!("expected {TIME_FORMS}")),
            },
            _ => Err(format!("expected {TIME_FORMS}")),
        },
        _ => Err(format!("expected {TIME_FORMS}")),
    }
}

/// Whole seconds since the epoch from a count of seconds.
fn seconds(secs: f64) -> Result<UnixTime, String> {
    if !secs.is_finite() {
        return Err("not a number of seconds".into());
    }
    if secs < 0.0 {
        return Err("lies before 1970".into());
    }
    // Saturates far beyond any plausible time; the daemon refuses times in the future.
    Ok(secs as UnixTime)
}

/// An RFC 3339 time: `2023-04-01T12:00:00Z`, fractions of a second allowed, `Z` or an
/// offset such as `+02:00`.
///
/// jiff reads the date, the time and the offset and checks them (the days of each month, leap
/// years, a leap second read as :59, offsets up to ±25:59). It also reads much that is not
/// RFC 3339 (`t` or a space for the `T`, `+0200`, `2023-04-01T12Z`, a time zone in brackets),
/// so the shape is checked first: the forms read here are the ones the import always read.
/// For the same reason, a local date before 1970 is refused whatever its offset, and any
/// number of fraction digits is accepted (jiff reads at most nine), as before.
fn rfc3339(text: &str) -> Result<UnixTime, String> {
    use jiff::fmt::temporal::Pieces;

    let text = text.trim();
    let bad = || format!("{text:?} is not an RFC 3339 time such as 2023-04-01T12:00:00Z");
    let (datetime, rest) = text.split_at_checked(19).ok_or_else(bad)?;
    // The fraction is checked for digits and then dropped: seconds are all we keep.
    let zone = match rest.strip_prefix('.') {
        Some(fraction) => fraction.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    let zone_shaped = zone == "Z" || shaped(zone, "+00:00") || shaped(zone, "-00:00");
    if !shaped(datetime, "0000-00-00T00:00:00") || !zone_shaped || datetime < "1970" {
        return Err(bad());
    }
    let joined = format!("{datetime}{zone}");
    let pieces = Pieces::parse(&joined).map_err(|_| bad())?;
    let local = pieces.date().to_datetime(pieces.time().unwrap_or_default());
    let offset = pieces
        .to_numeric_offset()
        .map_or(0, |offset| offset.seconds());
    let secs = utc::to_unix(local) - i64::from(offset);
    UnixTime::try_from(secs).map_err(|_| "lies before 1970".to_owned())
}

/// Whether `text` has the shape of `pattern`, a `0` in which stands for any ASCII digit and
/// anything else for itself.
fn shaped(text: &str, pattern: &str) -> bool {
    text.len() == pattern.len()
        && text.bytes().zip(pattern.bytes()).all(|(t, p)| match p {
            b'0' => t.is_ascii_digit(),
            _ => t == p,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A well-formed bcrypt hash (of "password", cost 10).
    const HASH: &str = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

    fn ts(json: &str) -> Result<UnixTime, String> {
        timestamp(&serde_json::from_str(json).map_err(|e| e.to_string())?)
    }

    #[test]
    fn every_accepted_creation_time_form_gives_the_same_second() {
        let at = 1_680_350_400; // 2023-04-01T12:00:00Z
        for form in [
            "1680350400",
            "1680350400000",
            "1680350400123.0",
            "\"2023-04-01T12:00:00Z\"",
            "\"2023-04-01T12:00:00.000Z\"",
            "\"2023-04-01T14:00:00+02:00\"",
            "\"2023-04-01T07:30:00-04:30\"",
            "{\"$date\": \"2023-04-01T12:00:00.000Z\"}",
            "{\"$date\": {\"$numberLong\": \"1680350400000\"}}",
            "{\"$date\": 1680350400000}",
        ] {
            assert_eq!(ts(form), Ok(at), "{form}");
        }
    }

    #[test]
    fn unreadable_creation_times_are_refused() {
        for form in [
            "-5",
            "\"2023-04-01\"",
            "\"yesterday\"",
            "\"2023-04-01T12:00:00\"",
            "{\"$date\": {\"$numberLong\": \"soon\"}}",
            "{\"when\": 1}",
            "true",
            "{\"$date\": \"1969-12-31T23:59:59Z\"}",
        ] {
            assert!(ts(form).is_err(), "{form}: {:?}", ts(form));
        }
    }

    #[test]
    fn a_mongoexport_line_becomes_an_account() {
        let line = format!(
            r#"{{"_id":{{"$oid":"642817c0e1b2c3d4e5f60718"}},"email":"Ada@Example.com","password":"{HASH}","name":"Ada","role":"admin","status":"active","createdAt":{{"$date":"2023-04-01T12:00:00.000Z"}},"__v":0}}"#
        );
        let user = parse_line(&line).expect("parses");
        assert_eq!(
            user,
            ImportUser {
                email: "Ada@Example.com".into(),
                name: "Ada".into(),
                role: Some("admin".into()),
                status: Some(UserStatus::Active),
                password_hash: HASH.into(),
                locale: None,
                created_at: Some(1_680_350_400),
            }
        );
    }

    #[test]
    fn the_hash_is_found_under_each_name_and_the_status_under_each_form() {
        for key in ["password_hash", "password", "passwordHash", "hash"] {
            let line = format!(r#"{{"email":"a@example.com","{key}":"{HASH}"}}"#);
            assert_eq!(parse_line(&line).expect(key).password_hash, HASH);
        }
        for (fields, status) in [
            (r#""disabled":true"#, Some(UserStatus::Disabled)),
            (r#""active":false"#, Some(UserStatus::Disabled)),
            (
                r#""status":"Disabled","disabled":true"#,
                Some(UserStatus::Disabled),
            ),
            (r#""active":true"#, Some(UserStatus::Active)),
            (r#""status":null"#, None),
        ] {
            let line = format!(r#"{{"email":"a@example.com","hash":"{HASH}",{fields}}}"#);
            assert_eq!(parse_line(&line).expect(fields).status, status, "{fields}");
        }
    }

    #[test]
    fn bad_lines_say_why_without_quoting_the_hash() {
        for (line, code, says) in [
            (
                r#"{"email": "a@example.com","#,
                "InvalidJson",
                "not valid JSON",
            ),
            (
                r#"[{"email": "a@example.com"}]"#,
                "InvalidJson",
                "--jsonArray",
            ),
            (r#""a@example.com""#, "InvalidJson", "not a JSON object"),
            (
                r#"{"name":"x","password":"$2b$secret"}"#,
                "InvalidInput",
                "no email",
            ),
            (
                r#"{"email":"a@example.com"}"#,
                "InvalidInput",
                "no password hash",
            ),
            (
                r#"{"email":"a@example.com","password":7}"#,
                "InvalidInput",
                "password: expected a string",
            ),
            (
                r#"{"email":"a@example.com","hash":"$2b$secret","status":"banned"}"#,
                "InvalidInput",
                "banned",
            ),
            (
                r#"{"email":"a@example.com","hash":"$2b$secret","active":true,"disabled":true}"#,
                "InvalidInput",
                "disabled and active disagree",
            ),
            (
                r#"{"email":"a@example.com","hash":"$2b$secret","createdAt":"soon"}"#,
                "InvalidInput",
                "createdAt",
            ),
        ] {
            let problem = match parse_line(line) {
                Ok(user) => panic!("{line}: expected an error, got {user:?}"),
                Err(problem) => problem,
            };
            assert_eq!(problem.code, code, "{line}: {problem:?}");
            assert!(problem.message.contains(says), "{line}: {problem:?}");
            assert!(!problem.message.contains("secret"), "{line}: {problem:?}");
        }
    }

    #[test]
    fn rfc3339_times_read_as_they_did_with_humantime() {
        // Each of these was compared with the humantime-based reader this one replaced.
        for (text, at) in [
            ("2023-04-01T12:00:00Z", Ok(1_680_350_400)),
            ("  2023-04-01T12:00:00Z\n", Ok(1_680_350_400)),
            ("2023-04-01T12:00:00.5+02:00", Ok(1_680_343_200)),
            // Any number of fraction digits, even none; jiff alone reads at most nine.
            ("2023-04-01T12:00:00.123456789012Z", Ok(1_680_350_400)),
            ("2023-04-01T12:00:00.Z", Ok(1_680_350_400)),
            ("2023-04-01T12:00:00+00:00", Ok(1_680_350_400)),
            ("2023-04-01T12:00:00-00:00", Ok(1_680_350_400)),
            // A leap second is read as the second before.
            ("2016-12-31T23:59:60Z", Ok(1_483_228_799)),
            ("2024-02-29T00:00:00Z", Ok(1_709_164_800)),
            ("1970-01-01T00:00:00Z", Ok(0)),
            ("9999-12-31T23:59:59Z", Ok(253_402_300_799)),
            ("9999-12-31T23:59:59-05:00", Ok(253_402_318_799)),
            ("1970-01-01T00:30:00+01:00", Err("lies before 1970")),
        ] {
            assert_eq!(rfc3339(text), at.map_err(String::from), "{text:?}");
        }
    }

    #[test]
    fn what_is_not_rfc3339_is_refused_though_jiff_would_read_it() {
        for text in [
            // jiff reads these; humantime did not, so neither does the import.
            "2023-04-01t12:00:00z",
            "2023-04-01 12:00:00Z",
            "2023-04-01T12:00:00+0200",
            "2023-04-01T12:00:00+02",
            "2023-04-01T12Z",
            "2023-04-01T12:00Z",
            "2023-04-01T12:00:00Z[UTC]",
            "2023-04-01T12:00:00+02:00[Europe/Berlin]",
            "20230401T120000Z",
            "+002023-04-01T12:00:00Z",
            "2023-04-01T12:00:00,5Z",
            // Local dates before 1970, even when the offset brings them after it.
            "1969-12-31T23:30:00-01:00",
            // Neither ever read these.
            "2023-02-29T12:00:00Z",
            "2023-04-01T24:00:00Z",
            "2023-04-01T12:00:00",
            "2023-04-01",
            "",
            "2023-04-01T12:00:00Zé",
            // humantime-era accidents, refused since jiff reads the offsets: an offset out of
            // range, signs inside one, and characters between the time and a final `Z`.
            "2023-04-01T12:00:00+00:70",
            "2023-04-01T12:00:00+99:00",
            "2023-04-01T14:00:00++2:00",
            "2023-04-01T12:00:00ZZ",
            "2023-04-01T12:00:00Z+02:00",
        ] {
            let refused = rfc3339(text).expect_err(text);
            assert_eq!(
                refused,
                format!(
                    "{:?} is not an RFC 3339 time such as 2023-04-01T12:00:00Z",
                    text.trim()
                ),
                "{text:?}"
            );
        }
    }
}
