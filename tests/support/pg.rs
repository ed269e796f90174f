//! PostgreSQL and gateway fixtures for the Supabase tests.
//!
//! `SUPAMERGE_TEST_DATABASE_URL` (a superuser URL, printed by
//! `scripts/start-postgres.sh`) must be set: a missing database FAILS the
//! test, it never skips. Each test gets a fresh database cloned from a
//! template that holds the stand-in and the migration; the template is built
//! once per migration content, under an advisory lock so concurrent test
//! processes do not race. Databases are dropped when the fixture drops.
#![allow(dead_code)]

use automerge::ChangeHash;
use std::sync::atomic::{AtomicU64, Ordering};

use automerge::transaction::Transactable;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::Value;
use sha2::{Digest, Sha256};
use supamerge::gateway::auth::dev_access_token;
use supamerge::gateway::{Gateway, GatewayConfig, GatewayHandle};
use supamerge::{ChangeEnvelope, Collection, DocId, SupabaseRemote, WorkspaceId};
use tokio_postgres::NoTls;
use uuid::Uuid;

/// The environment variable with the superuser URL.
pub const ENV: &str = "SUPAMERGE_TEST_DATABASE_URL";
/// The JWT secret the test gateways use.
pub const JWT_SECRET: &str = "supamerge-test-jwt-secret-0123456789abcdef";
/// The anon key of the test gateways.
pub const ANON_KEY: &str = "supamerge-test-anon-key";
/// The service key of the test gateways.
pub const SERVICE_KEY: &str = "supamerge-test-service-key";

use supamerge::gateway::dev::{self, MIGRATIONS, STANDIN_SQL};
const TEMPLATE_LOCK: i64 = 0x5375_7061_6d72;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The superuser URL, or a failure that says how to get one.
pub fn admin_url() -> String {
    match std::env::var(ENV) {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "{ENV} is not set: the Supabase tests need a PostgreSQL 15. Run `scripts/test.sh` \
             (it starts one), or `eval \"$(scripts/start-postgres.sh)\"` before `cargo test`."
        ),
    }
}

fn url_with(base: &str, db: &str, user: Option<(&str, &str)>) -> String {
    dev::database_url(base, db, user).unwrap_or_else(|e| panic!("{ENV}: {e}"))
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to {url}: {e}. Is PostgreSQL running? Run scripts/test.sh")
        });
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn template_name() -> String {
    let mut all = STANDIN_SQL.to_owned();
    for (name, sql) in MIGRATIONS {
        all.push_str(&format!("\u{0}{name}\u{0}{sql}"));
    }
    let digest = Sha256::digest(all.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("supamerge_tpl_{hex}")
}

/// A fresh database with the stand-in and the migration applied.
pub struct TestDb {
    /// The database name.
    pub name: String,
    admin: String,
}

impl TestDb {
    /// Creates a fresh database (building the template first if needed).
    pub async fn new() -> TestDb {
        let admin = admin_url();
        let maint = connect(&admin).await;
        let tpl = template_name();
        let name = format!(
            "supamerge_t_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        maint
            .execute("select pg_advisory_lock($1)", &[&TEMPLATE_LOCK])
            .await
            .expect("advisory lock");
        // Databases of test processes that died without cleaning up.
        for row in maint
            .query(
                "select datname::text from pg_database where datname like 'supamerge\\_t\\_%'",
                &[],
            )
            .await
            .expect("list databases")
        {
            let db: String = row.get(0);
            let pid = db.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = maint
                        .batch_execute(&format!("drop database if exists \"{db}\" with (force)"))
                        .await;
                }
            }
        }
        let exists = maint
            .query_opt("select 1 from pg_database where datname = $1", &[&tpl])
            .await
            .expect("query templates")
            .is_some();
        if !exists {
            let building = format!("{tpl}_building");
            maint
                .batch_execute(&format!(
                    "drop database if exists \"{building}\" with (force)"
                ))
                .await
                .expect("drop a half-built template");
            maint
                .batch_execute(&format!("create database \"{building}\""))
                .await
                .expect("create template database");
            dev::apply_schema(&url_with(&admin, &building, None))
                .await
                .unwrap_or_else(|e| panic!("applying the schema failed: {e:?}"));
            maint
                .batch_execute(&format!(
                    "alter database \"{building}\" rename to \"{tpl}\""
                ))
                .await
                .expect("rename template");
        }
        maint
            .batch_execute(&format!("create database \"{name}\" template \"{tpl}\""))
            .await
            .expect("create test database");
        maint
            .execute("select pg_advisory_unlock($1)", &[&TEMPLATE_LOCK])
            .await
            .expect("advisory unlock");
        TestDb { name, admin }
    }

    /// Superuser URL of this database.
    pub fn superuser_url(&self) -> String {
        url_with(&self.admin, &self.name, None)
    }

    /// URL of this database as the `authenticator` role (what the gateway uses).
    pub fn authenticator_url(&self) -> String {
        url_with(&self.admin, &self.name, Some(dev::AUTHENTICATOR))
    }

    /// A superuser connection to this database.
    pub async fn superuser(&self) -> tokio_postgres::Client {
        connect(&self.superuser_url()).await
    }

    /// A connection as `authenticator` (what PostgREST and the gateway log
    /// in as: no privileges of its own, may `set role` to the API roles).
    pub async fn authenticator(&self) -> tokio_postgres::Client {
        connect(&self.authenticator_url()).await
    }

    /// A connection as the migration's owner (`supabase_postgres`: hosted
    /// Supabase's `postgres`, not a superuser).
    pub async fn owner(&self) -> tokio_postgres::Client {
        connect(&url_with(
            &self.admin,
            &self.name,
            Some(dev::MIGRATION_OWNER),
        ))
        .await
    }

    /// The gateway configuration for this database (port 0).
    pub fn gateway_config(&self) -> GatewayConfig {
        GatewayConfig::new(self.authenticator_url(), JWT_SECRET, ANON_KEY)
            .with_service_key(SERVICE_KEY)
            .with_listen("127.0.0.1:0".parse().expect("addr"))
            .with_pool_size(8)
    }

    /// Starts a gateway on this database, in-process, on a free port.
    pub async fn spawn_gateway(&self) -> GatewayHandle {
        Gateway::bind(self.gateway_config())
            .await
            .expect("gateway binds")
            .spawn()
    }

    /// How many changes are stored in total.
    pub async fn change_count(&self) -> i64 {
        self.superuser()
            .await
            .query_one("select count(*) from public.changes", &[])
            .await
            .expect("count")
            .get(0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok((c, conn)) = tokio_postgres::connect(&admin, NoTls).await {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    let _ = c
                        .batch_execute(&format!("drop database if exists \"{name}\" with (force)"))
                        .await;
                }
            });
        })
        .join();
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Signs claims with the test secret (HS256).
pub fn jwt(claims: &Value) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("sign jwt")
}

/// A Supabase-Auth-like access token for a user, valid for an hour.
pub fn user_jwt(user: Uuid) -> String {
    dev_access_token(JWT_SECRET, user, 3600, now()).expect("sign jwt")
}

/// A token that expired `secs_ago` seconds ago.
pub fn expired_user_jwt(user: Uuid, secs_ago: u64) -> String {
    dev_access_token(JWT_SECRET, user, 3600, now() - secs_ago - 3600).expect("sign jwt")
}

/// A database (with a gateway in front of it) for Supabase-backed tests.
pub struct SupabaseFixture {
    /// The gateway (dropped first).
    pub gateway: GatewayHandle,
    /// The database.
    pub db: TestDb,
}

impl SupabaseFixture {
    /// A fresh database and a gateway on it.
    pub async fn start() -> SupabaseFixture {
        let db = TestDb::new().await;
        let gateway = db.spawn_gateway().await;
        SupabaseFixture { gateway, db }
    }

    /// The gateway's base URL.
    pub fn url(&self) -> String {
        self.gateway.url()
    }

    /// A remote acting as `user`.
    pub fn remote_for(&self, user: Uuid) -> SupabaseRemote {
        SupabaseRemote::builder(self.url(), ANON_KEY)
            .with_access_token(user_jwt(user))
            .build()
            .expect("remote")
    }

    /// A new workspace owned by `owner`, with `writers` as writers.
    pub async fn workspace(&self, owner: Uuid, writers: &[Uuid]) -> WorkspaceId {
        let r = self.remote_for(owner);
        let ws = r.create_workspace("test").await.expect("create workspace");
        for w in writers {
            r.add_member(ws, *w, supamerge::MemberRole::Writer)
                .await
                .expect("add member");
        }
        ws
    }
}

/// `n` consecutive real Automerge changes of one `tasks` document: (raw
/// bytes, hash). The first creates `_meta` with its collection, as servers
/// require (docs/interop.md).
pub fn change_chain(n: usize, actor_seed: u8) -> Vec<(Vec<u8>, [u8; 32])> {
    let mut doc = automerge::Automerge::new();
    doc.set_actor(automerge::ActorId::from(vec![actor_seed; 16]));
    (0..n)
        .map(|i| {
            let mut tx = doc.transaction();
            if i == 0 {
                let meta = tx
                    .put_object(automerge::ROOT, "_meta", automerge::ObjType::Map)
                    .expect("meta");
                tx.put(&meta, "collection", "tasks").expect("collection");
            }
            tx.put(automerge::ROOT, "n", i64::try_from(i).expect("i64"))
                .expect("put");
            tx.commit();
            let c = doc.get_last_local_change().expect("a change");
            (c.raw_bytes().to_vec(), c.hash().0)
        })
        .collect()
}

/// Envelopes of `n` changes of one new document.
pub fn envelopes(n: usize, actor_seed: u8) -> (DocId, Vec<ChangeEnvelope>) {
    let doc_id = DocId::from_uuid(Uuid::now_v7());
    let collection = Collection::new("tasks").expect("collection");
    let envs = change_chain(n, actor_seed)
        .into_iter()
        .map(|(bytes, hash)| ChangeEnvelope {
            doc_id,
            collection: collection.clone(),
            hash: ChangeHash(hash),
            bytes,
        })
        .collect();
    (doc_id, envs)
}
