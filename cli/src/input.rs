//! What the CLI reads from the person or script running it: new passwords, reset tokens and
//! confirmations. Secrets come from the terminal without echo or from the first line of
//! stdin, never from the command line (see the crate documentation for why).

use std::future::Future;
use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context as _};

use crate::cli::CheckArgs;

/// A mistake in how the command was used that clap cannot see, such as a deletion that
/// cannot be confirmed. Exits 2, like clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(String);

/// A new password: the first line of stdin with `password_stdin`, else asked twice on the
/// terminal with `prompt`.
pub(crate) fn read_new_password(password_stdin: bool, prompt: &str) -> anyhow::Result<String> {
    if password_stdin {
        return read_stdin_line("password");
    }
    let tty_error = "cannot read the password from the terminal (use --password-stdin)";
    let password = rpassword::prompt_password(format!("{prompt}: ")).context(tty_error)?;
    let again = rpassword::prompt_password("Repeat the password: ").context(tty_error)?;
    if password != again {
        bail!("the passwords do not match");
    }
    Ok(password)
}

/// The token `reset check` is to check: its argument unless that is `-` or `--token-stdin` is
/// given; then asked for without echo on a terminal, else the first line of stdin.
pub(crate) fn read_token(args: &CheckArgs) -> anyhow::Result<String> {
    let token = if !args.token_stdin && args.token != "-" {
        args.token.clone()
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Reset token: ")
            .context("cannot read the token from the terminal")?
    } else {
        read_stdin_line("token")?
    };
    // Tokens never contain spaces; a pasted one often brings some along.
    let token = token.trim();
    if token.is_empty() {
        return Err(UsageError("no token given".into()).into());
    }
    Ok(token.to_owned())
}

/// The first line of stdin without its line ending; a usage error if there is none.
fn read_stdin_line(what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("cannot read the {what} from stdin"))?;
    // Only the line ending is removed: other spaces may be part of a password.
    let text = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line);
    if text.is_empty() {
        return Err(UsageError(format!("stdin has no {what}")).into());
    }
    Ok(text.to_owned())
}

/// Asks before an action that cannot be undone, showing the question `describe` makes (it
/// looks up what would be affected, so a wrong id fails before anyone is asked). Refuses when
/// nobody can answer: a script that forgot `--yes` must not hang, nor act on a guess.
pub(crate) async fn confirm(
    action: &str,
    describe: impl Future<Output = anyhow::Result<String>>,
) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(format!(
            "refusing to {action} without confirmation: stdin is not a terminal; pass --yes"
        ))
        .into());
    }
    let question = describe.await?;
    eprint!("{question} This cannot be undone. [y/N] ");
    std::io::stderr()
        .flush()
        .context("cannot write the prompt")?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        bail!("not confirmed; did not {action}");
    }
    Ok(())
}
