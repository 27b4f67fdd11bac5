//! The one place where internal failures become the caller-facing [`ApiError`]. Domain
//! outcomes map to their variants; anything else is logged here with its detail and reported
//! to the caller only as `Unavailable`, so internals never leak.

use latchkey_client::ApiError;

use crate::passwords::{HashError, PolicyError};
use crate::store::StoreError;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::EmailTaken => ApiError::EmailTaken,
            StoreError::NotFound => ApiError::NotFound,
            StoreError::TokenRejected => ApiError::InvalidToken,
            // A concurrent change won; the caller may retry with fresh state.
            StoreError::Stale => ApiError::Unavailable,
            // Why a backup cannot be taken now (one runs already, too much changed meanwhile):
            // the operator's to read, and it holds no secret.
            StoreError::Backup(reason) => ApiError::InvalidInput {
                field: "backup".into(),
                reason,
            },
            e @ StoreError::Unreachable(_) => {
                tracing::warn!(error = %e, "store unreachable");
                ApiError::Unavailable
            }
            e @ (StoreError::Db(_)
            | StoreError::Sql(_)
            | StoreError::Schema(_)
            | StoreError::Corrupt { .. }
            | StoreError::Durability(_)
            | StoreError::Key(_)) => {
                tracing::error!(error = %e, "store failure");
                ApiError::Unavailable
            }
        }
    }
}

impl From<HashError> for ApiError {
    fn from(e: HashError) -> ApiError {
        tracing::error!(error = %e, "password hashing failure");
        ApiError::Unavailable
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> ApiError {
        ApiError::WeakPassword {
            reason: format!("the password {e}"),
        }
    }
}
