//! `latchkey user ...`: create, show, list, disable, enable and delete accounts, and set a
//! password as an admin.

use anyhow::Context as _;
use latchkey_client::{Client, NewUser, User, UserId, UserRef, UserStatus};

use crate::cli::UserCommand;
use crate::input::{confirm, read_new_password};
use crate::output::{print_item, wire_name, Outcome, UserLine};
use crate::page::page_through;

/// Runs `latchkey user ...`.
pub(crate) async fn run(
    command: &UserCommand,
    client: &Client,
    json: bool,
) -> anyhow::Result<Outcome> {
    let user = match command {
        UserCommand::Add(args) => {
            let password =
                read_new_password(args.password_stdin, &format!("Password for {}", args.email))
                    .with_context(|| format!("cannot create {}", args.email))?;
            let new = NewUser {
                email: args.email.clone(),
                name: args.name.clone(),
                password,
                role: args.role.clone(),
                locale: args.locale.clone(),
            };
            client
                .create_user(new)
                .await
                .with_context(|| format!("cannot create {}", args.email))?
        }
        UserCommand::Show { user } => find(client, &user_ref(user))
            .await
            .with_context(|| format!("cannot show user {user}"))?,
        UserCommand::List { after, limit } => {
            let print = |user: &User| print_item(json, user, UserLine(user));
            page_through(*after, *limit, |a, n| client.list_users(a, n), print)
                .await
                .context("cannot list users")?;
            return Ok(Outcome::Printed);
        }
        UserCommand::SetPassword { id, password_stdin } => {
            let context = || format!("cannot set the password of user {id}");
            // Looked up first, so that a wrong id fails before the password is typed.
            let user = client.get_user(*id).await.with_context(context)?;
            let prompt = format!("New password for {}", user.email);
            let password = read_new_password(*password_stdin, &prompt).with_context(context)?;
            let changed = client
                .set_password(*id, &password)
                .await
                .with_context(context)?;
            return Ok(Outcome::PasswordSet(changed));
        }
        UserCommand::Disable { id } => set_status(client, *id, UserStatus::Disabled).await?,
        UserCommand::Enable { id } => set_status(client, *id, UserStatus::Active).await?,
        UserCommand::Delete { id, yes } => {
            if !yes {
                confirm(&format!("delete user {id}"), async {
                    let user = client
                        .get_user(*id)
                        .await
                        .with_context(|| format!("cannot delete user {id}"))?;
                    Ok(format!("Delete {}?", UserLine(&user)))
                })
                .await?;
            }
            client
                .delete_user(*id)
                .await
                .with_context(|| format!("cannot delete user {id}"))?;
            return Ok(Outcome::Deleted { deleted: *id });
        }
    };
    Ok(Outcome::User(user))
}

/// Enables or disables an account.
async fn set_status(client: &Client, id: UserId, status: UserStatus) -> anyhow::Result<User> {
    client
        .set_status(id, status)
        .await
        .with_context(|| format!("cannot set user {id} {}", wire_name(&status)))
}

/// An account named on the command line: a number is an id, anything else an email.
pub(crate) fn user_ref(text: &str) -> UserRef {
    match text.trim().parse::<UserId>() {
        Ok(id) => UserRef::Id(id),
        Err(_) => UserRef::Email(text.to_owned()),
    }
}

/// Looks an account up by id or email.
async fn find(client: &Client, user: &UserRef) -> Result<User, latchkey_client::Error> {
    match user {
        UserRef::Id(id) => client.get_user(*id).await,
        UserRef::Email(email) => client.find_user(email).await,
    }
}
