//! Development databases: create a PostgreSQL database with the Supabase
//! stand-in and the supamerge migration applied, point a gateway at it, and
//! mint the JWTs Supabase Auth would issue. Used by `supamerge bench` and by
//! the PostgreSQL tests (`tests/support/pg.rs`); never needed in production,
//! where Supabase provides all of this.

use reqwest::Url;
use tokio_postgres::NoTls;

/// The SQL that makes a plain PostgreSQL look like a Supabase project to the
/// migration (roles, `auth.uid()`, `auth.jwt()`).
pub const STANDIN_SQL: &str = include_str!("../../supabase/local/supabase_standin.sql");
/// The supamerge migrations, as shipped in `supabase/migrations/`: (file
/// name, SQL), applied in this order (name order, as `supabase db push`
/// does). A deployment of the first file takes the later ones on top.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "20261122000000_supamerge.sql",
        include_str!("../../supabase/migrations/20261122000000_supamerge.sql"),
    ),
    (
        "20261201000000_supamerge_prune.sql",
        include_str!("../../supabase/migrations/20261201000000_supamerge_prune.sql"),
    ),
    (
        "20261202000000_supamerge_fast_rpc.sql",
        include_str!("../../supabase/migrations/20261202000000_supamerge_fast_rpc.sql"),
    ),
];
/// The first supamerge migration (the schema before compaction), as shipped
/// in `supabase/migrations/`; [`MIGRATIONS`] lists every file.
pub const MIGRATION_SQL: &str = MIGRATIONS[0].1;
/// The login role the gateway connects as (created by the stand-in).
pub const AUTHENTICATOR: (&str, &str) = ("authenticator", "authenticator-dev-only");
/// The role the migration is loaded as (created by the stand-in): hosted
/// Supabase's `postgres`, LOGIN and BYPASSRLS but not a superuser. It owns
/// the tables and the SECURITY DEFINER functions.
pub const MIGRATION_OWNER: (&str, &str) = ("supabase_postgres", "supabase-postgres-dev-only");
/// The JWT secret of development gateways.
pub const DEV_JWT_SECRET: &str = "supamerge-dev-jwt-secret-0123456789abcdef";
/// The anon key of development gateways.
pub const DEV_ANON_KEY: &str = "supamerge-dev-anon-key";

/// Why a development database could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// The URL does not parse or cannot carry the database name or user.
    #[error("{url} is not a usable PostgreSQL URL: {reason}")]
    Url {
        /// The URL (as given).
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// A PostgreSQL call failed.
    #[error("PostgreSQL failed to {op}: {source}")]
    Postgres {
        /// What was being done.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Signing a JWT failed.
    #[error("cannot sign a JWT: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    /// The gateway did not start.
    #[error(transparent)]
    Gateway(#[from] super::GatewayError),
}

fn pg(op: &'static str) -> impl FnOnce(tokio_postgres::Error) -> DevError {
    move |source| DevError::Postgres { op, source }
}

/// `base` with its database replaced by `db` and, when given, its user and
/// password replaced.
///
/// # Errors
/// [`DevError::Url`].
pub fn database_url(base: &str, db: &str, user: Option<(&str, &str)>) -> Result<String, DevError> {
    let bad = |reason: String| DevError::Url {
        url: base.to_owned(),
        reason,
    };
    let mut u = Url::parse(base).map_err(|e| bad(e.to_string()))?;
    u.set_path(&format!("/{db}"));
    if let Some((name, pw)) = user {
        u.set_username(name)
            .map_err(|()| bad("cannot set a user name".to_owned()))?;
        u.set_password(Some(pw))
            .map_err(|()| bad("cannot set a password".to_owned()))?;
    }
    Ok(u.to_string())
}

/// Connects and drives the connection on the current tokio runtime.
///
/// # Errors
/// [`DevError::Postgres`].
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, DevError> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(pg("connect"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Applies the stand-in (as the superuser of `superuser_url`) and then the
/// migration, logged in as [`MIGRATION_OWNER`] (not a superuser, as on
/// Supabase), to the empty database `superuser_url` points at.
///
/// # Errors
/// [`DevError::Url`], or [`DevError::Postgres`] naming which script failed.
pub async fn apply_schema(superuser_url: &str) -> Result<(), DevError> {
    let admin = connect(superuser_url).await?;
    admin
        .batch_execute(STANDIN_SQL)
        .await
        .map_err(pg("apply the Supabase stand-in"))?;
    let db = Url::parse(superuser_url)
        .map_err(|e| DevError::Url {
            url: superuser_url.to_owned(),
            reason: e.to_string(),
        })?
        .path()
        .trim_start_matches('/')
        .to_owned();
    let owner = connect(&database_url(superuser_url, &db, Some(MIGRATION_OWNER))?).await?;
    for (_, sql) in MIGRATIONS {
        owner
            .batch_execute(sql)
            .await
            .map_err(pg("apply the supamerge migrations as supabase_postgres"))?;
    }
    Ok(())
}

/// A throwaway database with the schema applied; [`DevDatabase::drop_now`]
/// removes it.
#[derive(Debug)]
pub struct DevDatabase {
    admin: String,
    name: String,
}

impl DevDatabase {
    /// Creates `<prefix>_<pid>_<nanos>` with the stand-in and the migration,
    /// through the superuser URL `admin`.
    ///
    /// # Errors
    /// [`DevError`] when the server refuses.
    pub async fn create(admin: &str, prefix: &str) -> Result<Self, DevError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("{prefix}_{}_{nanos}", std::process::id());
        let maint = connect(admin).await?;
        maint
            .batch_execute(&format!("create database \"{name}\""))
            .await
            .map_err(pg("create a database"))?;
        let db = Self {
            admin: admin.to_owned(),
            name,
        };
        apply_schema(&db.superuser_url()?).await?;
        Ok(db)
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The superuser URL of this database.
    ///
    /// # Errors
    /// [`DevError::Url`].
    pub fn superuser_url(&self) -> Result<String, DevError> {
        database_url(&self.admin, &self.name, None)
    }

    /// The URL of this database as the `authenticator` role (what a gateway uses).
    ///
    /// # Errors
    /// [`DevError::Url`].
    pub fn authenticator_url(&self) -> Result<String, DevError> {
        database_url(&self.admin, &self.name, Some(AUTHENTICATOR))
    }

    /// Starts a gateway on this database in-process on `127.0.0.1:0` with
    /// the development secret and anon key.
    ///
    /// # Errors
    /// [`DevError::Gateway`] when it cannot bind or reach the database.
    pub async fn spawn_gateway(&self) -> Result<super::GatewayHandle, DevError> {
        let config =
            super::GatewayConfig::new(self.authenticator_url()?, DEV_JWT_SECRET, DEV_ANON_KEY)
                .with_listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
                .with_pool_size(8);
        Ok(super::Gateway::bind(config).await?.spawn())
    }

    /// Drops the database (terminating its connections).
    ///
    /// # Errors
    /// [`DevError::Postgres`].
    pub async fn drop_now(self) -> Result<(), DevError> {
        let maint = connect(&self.admin).await?;
        maint
            .batch_execute(&format!(
                "drop database if exists \"{}\" with (force)",
                self.name
            ))
            .await
            .map_err(pg("drop the database"))
    }
}

/// A Supabase-Auth-like access token for `user` (role `authenticated`),
/// valid for `ttl_secs`, signed with `secret` (HS256).
///
/// # Errors
/// [`DevError::Jwt`].
pub fn user_jwt(secret: &str, user: uuid::Uuid, ttl_secs: u64) -> Result<String, DevError> {
    Ok(super::auth::dev_access_token(
        secret,
        user,
        ttl_secs,
        super::auth::now_unix(),
    )?)
}
