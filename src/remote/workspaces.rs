//! Workspaces, members and invitations: what a backend offers beyond the
//! change log ([`WorkspaceAdmin`]), with typed answers.
//!
//! [`SupabaseRemote`](super::SupabaseRemote) implements every operation
//! through the `supamerge_*` RPC functions of the migration (the server
//! checks every rule: only owners manage members, a workspace keeps an
//! owner, invitation codes are stored hashed, ...; see `docs/supabase.md`).
//! [`LocalHub`](super::LocalHub) has no users: anyone who can open the hub
//! directory may read and write every workspace in it, so it supports
//! [`WorkspaceAdmin::create_workspace`] (a fresh id) and answers
//! [`RemoteError::Unsupported`] for members and invitations.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::RemoteError;
use crate::id::WorkspaceId;

/// A member's role in a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    /// Pull only.
    Reader,
    /// Push changes and snapshots, pull; invite readers and writers.
    Writer,
    /// Everything, including managing members and inviting owners.
    Owner,
}

impl MemberRole {
    /// The role's name in SQL and on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            MemberRole::Owner => "owner",
            MemberRole::Writer => "writer",
            MemberRole::Reader => "reader",
        }
    }

    /// The most a member of this role may grant through an invitation:
    /// owners any role, writers at most writer, readers nothing.
    pub fn may_invite(&self, role: MemberRole) -> bool {
        match self {
            MemberRole::Owner => true,
            MemberRole::Writer => role <= MemberRole::Writer,
            MemberRole::Reader => false,
        }
    }
}

impl fmt::Display for MemberRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not `owner`, `writer` or `reader`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid role {given:?}: expected owner, writer or reader")]
#[non_exhaustive]
pub struct InvalidRole {
    /// What was given.
    pub given: String,
}

impl std::str::FromStr for MemberRole {
    type Err = InvalidRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "owner" => Ok(MemberRole::Owner),
            "writer" => Ok(MemberRole::Writer),
            "reader" => Ok(MemberRole::Reader),
            _ => Err(InvalidRole {
                given: s.to_owned(),
            }),
        }
    }
}

/// One of the caller's workspaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkspaceSummary {
    /// The workspace id (assigned by the server).
    pub workspace_id: WorkspaceId,
    /// Its name.
    pub name: String,
    /// The caller's role in it.
    pub role: MemberRole,
    /// When it was created (RFC 3339, as the server wrote it).
    #[serde(default)]
    pub created_at: Option<String>,
}

/// A member of a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Member {
    /// The user id (Supabase Auth's `sub`).
    pub user_id: uuid::Uuid,
    /// Their role.
    pub role: MemberRole,
    /// When they became a member (RFC 3339).
    #[serde(default)]
    pub added_at: Option<String>,
}

/// What an invitation grants and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct InviteOptions {
    /// The role a joining user gets.
    pub role: MemberRole,
    /// Seconds until the code expires (the server accepts 60 s to 365 days).
    pub expires_in_secs: u64,
    /// How many users may join with the code (1 to 10,000).
    pub max_uses: u32,
}

impl InviteOptions {
    /// Seven days, one use.
    pub const DEFAULT_EXPIRY_SECS: u64 = 7 * 24 * 3600;

    /// An invitation for `role`: seven days, one use.
    pub fn new(role: MemberRole) -> Self {
        Self {
            role,
            expires_in_secs: Self::DEFAULT_EXPIRY_SECS,
            max_uses: 1,
        }
    }

    /// Sets the lifetime in seconds.
    pub fn with_expiry_secs(mut self, secs: u64) -> Self {
        self.expires_in_secs = secs;
        self
    }

    /// Sets how many users may join with the code.
    pub fn with_max_uses(mut self, uses: u32) -> Self {
        self.max_uses = uses;
        self
    }
}

/// A new invitation, with its code. The code is shown only here: the server
/// keeps its SHA-256, never the code.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CreatedInvite {
    /// The invitation's id (to list or revoke it without the code).
    pub invite_id: uuid::Uuid,
    /// The code to hand to the invitee (`smi_` and 22 base64url characters:
    /// 122 random bits).
    pub code: String,
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// The role it grants.
    pub role: MemberRole,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// How many users may join with it.
    pub max_uses: u32,
}

impl fmt::Debug for CreatedInvite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedInvite")
            .field("invite_id", &self.invite_id)
            .field("code", &"<redacted>")
            .field("workspace_id", &self.workspace_id)
            .field("role", &self.role)
            .field("expires_at", &self.expires_at)
            .field("max_uses", &self.max_uses)
            .finish()
    }
}

/// Where an invitation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InviteState {
    /// It can be used.
    Active,
    /// Past its expiry.
    Expired,
    /// Every use was taken.
    UsedUp,
    /// Revoked.
    Revoked,
}

/// An invitation as listed (never with its code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Invite {
    /// Its id.
    pub invite_id: uuid::Uuid,
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// The role it grants.
    pub role: MemberRole,
    /// Who created it.
    pub created_by: Option<uuid::Uuid>,
    /// When (RFC 3339).
    pub created_at: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// How many users may join with it.
    pub max_uses: u32,
    /// How many did.
    pub uses: u32,
    /// Where it stands.
    pub state: InviteState,
}

/// Which invitation to revoke.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InviteRef {
    /// By id (from [`WorkspaceAdmin::list_invites`]).
    Id(uuid::Uuid),
    /// By code.
    Code(String),
}

impl fmt::Debug for InviteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InviteRef::Id(id) => write!(f, "InviteRef::Id({id})"),
            InviteRef::Code(_) => f.write_str("InviteRef::Code(<redacted>)"),
        }
    }
}

impl InviteRef {
    /// A UUID is an id, anything else a code.
    pub fn parse(text: &str) -> Self {
        match uuid::Uuid::parse_str(text.trim()) {
            Ok(id) => InviteRef::Id(id),
            Err(_) => InviteRef::Code(text.trim().to_owned()),
        }
    }
}

/// What joining with a code did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Joined {
    /// The workspace joined.
    pub workspace_id: WorkspaceId,
    /// Its name.
    pub name: String,
    /// The caller's role now.
    pub role: MemberRole,
    /// `false` when the caller already was a member with at least that role
    /// (nothing changed, no use of the code was taken).
    pub joined: bool,
}

/// Workspace, member and invitation management. Every method is one call to
/// the backend; the backend enforces the rules (see the module docs).
#[async_trait]
pub trait WorkspaceAdmin: Send + Sync {
    /// Creates a workspace named `name`; the caller becomes its owner.
    /// Returns the id the backend assigned.
    ///
    /// # Errors
    /// [`RemoteError::Unauthenticated`] without a user; classified errors.
    async fn create_workspace(&self, name: &str) -> Result<WorkspaceId, RemoteError>;

    /// The caller's workspaces with the caller's role, by name.
    ///
    /// # Errors
    /// [`RemoteError::Unsupported`] on a backend without users; classified
    /// errors.
    async fn list_workspaces(&self) -> Result<Vec<WorkspaceSummary>, RemoteError> {
        Err(unsupported("list workspaces"))
    }

    /// The members of a workspace (any member may list them).
    ///
    /// # Errors
    /// [`RemoteError::Forbidden`] for non-members, [`RemoteError::NotAMember`]
    /// for a removed member; classified errors.
    async fn members(&self, workspace: WorkspaceId) -> Result<Vec<Member>, RemoteError> {
        let _ = workspace;
        Err(unsupported("list members"))
    }

    /// Adds a member with a role, or changes an existing member's role
    /// (owners only).
    ///
    /// # Errors
    /// [`RemoteError::Forbidden`] for non-owners, [`RemoteError::LastOwner`]
    /// when it would demote the last owner; classified errors.
    async fn add_member(
        &self,
        workspace: WorkspaceId,
        user: uuid::Uuid,
        role: MemberRole,
    ) -> Result<(), RemoteError> {
        let _ = (workspace, user, role);
        Err(unsupported("add a member"))
    }

    /// Changes the role of an existing member (owners only).
    ///
    /// # Errors
    /// As [`WorkspaceAdmin::add_member`], and [`RemoteError::BadRequest`]
    /// when `user` is not a member.
    async fn set_role(
        &self,
        workspace: WorkspaceId,
        user: uuid::Uuid,
        role: MemberRole,
    ) -> Result<(), RemoteError> {
        let _ = (workspace, user, role);
        Err(unsupported("change a role"))
    }

    /// Removes a member (owners only). The removed user can no longer pull
    /// or push; their replicas are told [`RemoteError::NotAMember`].
    ///
    /// # Errors
    /// [`RemoteError::Forbidden`] for non-owners, [`RemoteError::LastOwner`]
    /// for the last owner; classified errors.
    async fn remove_member(
        &self,
        workspace: WorkspaceId,
        user: uuid::Uuid,
    ) -> Result<(), RemoteError> {
        let _ = (workspace, user);
        Err(unsupported("remove a member"))
    }

    /// The caller leaves a workspace.
    ///
    /// # Errors
    /// [`RemoteError::LastOwner`] for the last owner while others remain;
    /// classified errors.
    async fn leave_workspace(&self, workspace: WorkspaceId) -> Result<(), RemoteError> {
        let _ = workspace;
        Err(unsupported("leave a workspace"))
    }

    /// Creates an invitation and returns its code. Owners may invite any
    /// role, writers readers and writers, readers nobody.
    ///
    /// # Errors
    /// [`RemoteError::Forbidden`] for a role the caller may not grant;
    /// [`RemoteError::BadRequest`] for an expiry or use count out of range.
    async fn create_invite(
        &self,
        workspace: WorkspaceId,
        options: InviteOptions,
    ) -> Result<CreatedInvite, RemoteError> {
        let _ = (workspace, options);
        Err(unsupported("invite"))
    }

    /// The invitations of a workspace, without codes: all of them for an
    /// owner, a writer's own for a writer.
    ///
    /// # Errors
    /// [`RemoteError::Forbidden`] for readers and non-members.
    async fn list_invites(&self, workspace: WorkspaceId) -> Result<Vec<Invite>, RemoteError> {
        let _ = workspace;
        Err(unsupported("list invitations"))
    }

    /// Revokes an invitation (its creator or an owner of its workspace).
    ///
    /// # Errors
    /// [`RemoteError::InvalidInvitation`] when there is no such invitation
    /// the caller may revoke.
    async fn revoke_invite(&self, invite: InviteRef) -> Result<(), RemoteError> {
        let _ = invite;
        Err(unsupported("revoke an invitation"))
    }

    /// Joins the workspace of an invitation code.
    ///
    /// # Errors
    /// [`RemoteError::InvalidInvitation`] for a wrong, expired, used-up or
    /// revoked code, all alike.
    async fn accept_invite(&self, code: &str) -> Result<Joined, RemoteError> {
        let _ = code;
        Err(unsupported("join with an invitation"))
    }
}

/// The hub has no users: creating a workspace is picking a new random id
/// (nothing needs to be registered); everything else is
/// [`RemoteError::Unsupported`].
#[async_trait]
impl WorkspaceAdmin for super::LocalHub {
    async fn create_workspace(&self, name: &str) -> Result<WorkspaceId, RemoteError> {
        let _ = name;
        Ok(WorkspaceId::from_random(rand::random()))
    }
}

fn unsupported(op: &'static str) -> RemoteError {
    RemoteError::Unsupported {
        op,
        reason: "the embedded hub has no users: everyone who opens its directory reads and writes every workspace",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_hub_creates_workspaces_and_supports_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let hub = super::super::LocalHub::open(dir.path()).unwrap();
        let admin: &dyn WorkspaceAdmin = &hub;
        let (a, b) = (
            admin.create_workspace("a").await.unwrap(),
            admin.create_workspace("a").await.unwrap(),
        );
        assert_ne!(a, b);
        for e in [
            admin.list_workspaces().await.unwrap_err(),
            admin.members(a).await.unwrap_err(),
            admin
                .create_invite(a, InviteOptions::new(MemberRole::Reader))
                .await
                .unwrap_err(),
            admin.accept_invite("smi_x").await.unwrap_err(),
        ] {
            assert!(matches!(e, RemoteError::Unsupported { .. }), "{e:?}");
            assert!(!e.is_retryable());
        }
    }

    #[test]
    fn who_may_invite_whom() {
        use MemberRole::*;
        for r in [Reader, Writer, Owner] {
            assert!(Owner.may_invite(r));
            assert!(!Reader.may_invite(r));
        }
        assert!(Writer.may_invite(Reader));
        assert!(Writer.may_invite(Writer));
        assert!(!Writer.may_invite(Owner));
        assert_eq!("Writer".parse::<MemberRole>(), Ok(Writer));
        assert!("admin".parse::<MemberRole>().is_err());
        assert_eq!(
            InviteRef::parse("6f1c2a44-0000-4000-8000-000000000000"),
            InviteRef::Id(uuid::Uuid::parse_str("6f1c2a44-0000-4000-8000-000000000000").unwrap())
        );
        assert_eq!(
            InviteRef::parse(" smi_abc "),
            InviteRef::Code("smi_abc".into())
        );
    }
}
