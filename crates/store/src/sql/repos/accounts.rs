//! [`AccountRepo`] over the `accounts` table: AK/SK pairs, their SK only
//! sealed, and the role a user holds in a project.

use async_trait::async_trait;

use super::SqlStore;
use crate::model::{Account, AccountSecret, Role};
use crate::sql::on_unique;
use crate::sql::rows::{AccountRow, CorruptRow};
use crate::{AccountRepo, Conflict, Result, StoreError};

macro_rules! account_columns {
    () => {
        "access_key, secret_key, sealed_secret, project_id, user_id, role, created_ms"
    };
}

const INSERT_ACCOUNT: &str = concat!(
    "INSERT INTO accounts (",
    account_columns!(),
    ") VALUES ($1, '', $2, $3, $4, $5, $6)"
);
const SELECT_ACCOUNT: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE access_key = $1"
);
const LIST_ACCOUNTS: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts ORDER BY created_ms, access_key"
);
const DELETE_ACCOUNT: &str = "DELETE FROM accounts WHERE access_key = $1";
const SEAL_ACCOUNT: &str = "UPDATE accounts SET sealed_secret = $2, secret_key = '' \
     WHERE access_key = $1 AND sealed_secret IS NULL";
const SET_ACCOUNT_ROLE: &str = "UPDATE accounts SET role = $2 WHERE access_key = $1";
const USER_ROLES: &str =
    "SELECT DISTINCT role FROM accounts WHERE project_id = $1 AND user_id = $2";

#[async_trait]
impl AccountRepo for SqlStore {
    async fn create_account(&self, account: &Account) -> Result<()> {
        // Only sealed SKs reach the database: a backup of it holds no signing
        // key.
        let AccountSecret::Sealed(sealed) = &account.secret else {
            return Err(StoreError::ClearSecret);
        };
        sqlx::query(INSERT_ACCOUNT)
            .bind(&account.access_key)
            .bind(sealed.as_slice())
            .bind(&account.project_id)
            .bind(&account.user_id)
            .bind(account.role.as_str())
            .bind(account.created_ms)
            .execute(&self.pool)
            .await
            .map_err(|e| on_unique(e, Conflict::AccessKey))?;
        Ok(())
    }

    async fn get_account(&self, access_key: &str) -> Result<Option<Account>> {
        sqlx::query_as::<_, AccountRow>(SELECT_ACCOUNT)
            .bind(access_key)
            .fetch_optional(&self.pool)
            .await?
            .map(Account::try_from)
            .transpose()
    }

    async fn list_accounts(&self) -> Result<Vec<Account>> {
        sqlx::query_as::<_, AccountRow>(LIST_ACCOUNTS)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(Account::try_from)
            .collect()
    }

    async fn delete_account(&self, access_key: &str) -> Result<()> {
        let done = sqlx::query(DELETE_ACCOUNT)
            .bind(access_key)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn seal_account_secret(&self, access_key: &str, sealed: &[u8]) -> Result<bool> {
        let done = sqlx::query(SEAL_ACCOUNT)
            .bind(access_key)
            .bind(sealed)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_account_role(&self, access_key: &str, role: Role) -> Result<()> {
        let done = sqlx::query(SET_ACCOUNT_ROLE)
            .bind(access_key)
            .bind(role.as_str())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn user_role(&self, project_id: &str, user_id: &str) -> Result<Option<Role>> {
        let roles: Vec<String> = sqlx::query_scalar(USER_ROLES)
            .bind(project_id)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        let mut best = None;
        for r in roles {
            let role = Role::parse(&r).ok_or(CorruptRow::Role(r))?;
            best = Some(best.map_or(role, |b: Role| b.max(role)));
        }
        Ok(best)
    }
}
