//! The todo app of `examples/todo.rs` against a Supabase project or the
//! local gateway (`supamerge gateway`, docs/supabase.md): two replicas of the
//! same user (two devices), each with its own engine, syncing through
//! PostgreSQL.
//!
//! The connection comes from the environment, else from the profile that
//! `supamerge login` writes (`$XDG_CONFIG_HOME/supamerge/profile.json`):
//!
//! ```sh
//! SUPABASE_URL=http://127.0.0.1:54321 SUPABASE_ANON_KEY=dev-anon-key \
//! SUPABASE_ACCESS_TOKEN="$(cargo -q supamerge dev-token)" \
//!   cargo run --example todo_supabase
//! # or, after `supamerge login ...`:
//! cargo run --example todo_supabase
//! ```
//!
//! The example creates a workspace (the user becomes its owner), so it
//! leaves one workspace with one todo behind on the server.

use std::path::PathBuf;
use std::sync::Arc;

use autosurgeon::{Hydrate, Reconcile};
use supamerge::{
    AccessTokenProvider, AsyncReplica, AuthSession, Collection, RefreshingToken, Remote,
    StaticToken, SupabaseRemote, SyncEngine,
};

#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
struct Todo {
    title: String,
    done: bool,
}

/// Where to connect, and the user's token source.
struct Connection {
    url: String,
    anon_key: String,
    tokens: Arc<dyn AccessTokenProvider>,
}

/// `SUPABASE_URL`, `SUPABASE_ANON_KEY` and `SUPABASE_ACCESS_TOKEN`, else the
/// profile of `supamerge login` (its refresh token keeps the session alive).
fn connection() -> Result<Connection, Box<dyn std::error::Error>> {
    if let (Ok(url), Ok(anon_key), Ok(token)) = (
        std::env::var("SUPABASE_URL"),
        std::env::var("SUPABASE_ANON_KEY"),
        std::env::var("SUPABASE_ACCESS_TOKEN"),
    ) {
        return Ok(Connection {
            url,
            anon_key,
            tokens: Arc::new(StaticToken::new(token)),
        });
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or("set SUPABASE_URL, SUPABASE_ANON_KEY and SUPABASE_ACCESS_TOKEN")?;
    let path = config.join("supamerge").join("profile.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "no connection: set SUPABASE_URL, SUPABASE_ANON_KEY and SUPABASE_ACCESS_TOKEN, \
             or run `supamerge login` ({}: {e})",
            path.display()
        )
    })?;
    let profile: serde_json::Value = serde_json::from_str(&text)?;
    let field = |k: &str| profile[k].as_str().map(str::to_owned);
    let url = field("supabase_url").ok_or("the profile has no supabase_url")?;
    let anon_key = field("anon_key").ok_or("the profile has no anon_key")?;
    let tokens: Arc<dyn AccessTokenProvider> = match (field("refresh_token"), field("access_token"))
    {
        (Some(refresh), access) => {
            let mut session = AuthSession::from_refresh_token(refresh);
            if let Some(a) = access {
                session = session.with_access_token(a);
            }
            Arc::new(RefreshingToken::new(&url, anon_key.clone(), session)?)
        }
        (None, Some(access)) => Arc::new(StaticToken::new(access)),
        (None, None) => return Err("the profile holds no token: run `supamerge login`".into()),
    };
    Ok(Connection {
        url,
        anon_key,
        tokens,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let conn = connection()?;
    let remote = SupabaseRemote::builder(conn.url, conn.anon_key)
        .with_token_provider(conn.tokens)
        .build()?;
    // The server picks the workspace id; the caller becomes its owner.
    let team = remote.create_workspace("todo example").await?;
    println!("created workspace {team}");
    let remote: Arc<dyn Remote> = Arc::new(remote);

    let dir = tempfile::tempdir()?;
    let laptop = AsyncReplica::open(dir.path().join("laptop")).await?;
    let phone = AsyncReplica::open(dir.path().join("phone")).await?;
    let laptop_sync = SyncEngine::builder(laptop.replica().clone(), remote.clone()).spawn();
    let phone_sync = SyncEngine::builder(phone.replica().clone(), remote.clone()).spawn();
    laptop_sync.join(team).await?;
    phone_sync.join(team).await?;

    let todos = Collection::new("todos")?;
    let id = laptop
        .create(
            team,
            &todos,
            Todo {
                title: "water the plants".into(),
                done: false,
            },
        )
        .await?;
    laptop_sync.sync_now().await?;
    phone_sync.sync_now().await?;
    println!("phone sees: {:?}", phone.get::<Todo>(id).await?);

    phone.update(id, |t: &mut Todo| t.done = true).await?;
    phone_sync.sync_now().await?;
    laptop_sync.sync_now().await?;
    let a: Todo = laptop.get(id).await?;
    let b: Todo = phone.get(id).await?;
    if a != b {
        return Err(format!("the replicas differ: {a:?} / {b:?}").into());
    }
    println!("both replicas agree: {a:?}");
    laptop_sync.shutdown().await;
    phone_sync.shutdown().await;
    Ok(())
}
