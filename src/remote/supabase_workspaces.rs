//! [`WorkspaceAdmin`] for [`SupabaseRemote`]: one `supamerge_*` RPC per
//! operation (see the migration for the rules the server enforces).

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::workspaces::{
    CreatedInvite, Invite, InviteOptions, InviteRef, Joined, Member, MemberRole, WorkspaceAdmin,
    WorkspaceSummary,
};
use super::{RemoteError, SupabaseRemote};
use crate::id::WorkspaceId;

#[derive(Deserialize)]
struct Workspaces {
    workspaces: Vec<WorkspaceSummary>,
}

#[derive(Deserialize)]
struct Members {
    members: Vec<Member>,
}

#[derive(Deserialize)]
struct Invites {
    invites: Vec<Invite>,
}

#[async_trait]
impl WorkspaceAdmin for SupabaseRemote {
    async fn create_workspace(&self, name: &str) -> Result<WorkspaceId, RemoteError> {
        SupabaseRemote::create_workspace(self, name).await
    }

    async fn list_workspaces(&self) -> Result<Vec<WorkspaceSummary>, RemoteError> {
        let w: Workspaces = self.rpc("supamerge_list_workspaces", &json!({})).await?;
        Ok(w.workspaces)
    }

    async fn members(&self, workspace: WorkspaceId) -> Result<Vec<Member>, RemoteError> {
        let m: Members = self
            .rpc("supamerge_list_members", &json!({"p_workspace": workspace}))
            .await?;
        Ok(m.members)
    }

    async fn add_member(
        &self,
        workspace: WorkspaceId,
        user: uuid::Uuid,
        role: MemberRole,
    ) -> Result<(), RemoteError> {
        SupabaseRemote::add_member(self, workspace, user, role).await
    }

    async fn set_role(
        &self,
        workspace: WorkspaceId,
        user: uuid::Uuid,
        role: MemberRole,
    ) -> Result<(), RemoteError> {
        let _: Value = self
            .rpc(
                "supamerge_set_role",
                &json!({"p_workspace": workspace, "p_user": user, "p_role": role.as_str()}),
            )
            .await?;
        Ok(())
    }

    async fn remove_member(
        &self,
        workspace: WorkspaceId,
        user: uuid::Uuid,
    ) -> Result<(), RemoteError> {
        let _: Value = self
            .rpc(
                "supamerge_remove_member",
                &json!({"p_workspace": workspace, "p_user": user}),
            )
            .await?;
        Ok(())
    }

    async fn leave_workspace(&self, workspace: WorkspaceId) -> Result<(), RemoteError> {
        SupabaseRemote::leave_workspace(self, workspace).await
    }

    async fn create_invite(
        &self,
        workspace: WorkspaceId,
        options: InviteOptions,
    ) -> Result<CreatedInvite, RemoteError> {
        self.rpc(
            "supamerge_create_invite",
            &json!({
                "p_workspace": workspace,
                "p_role": options.role.as_str(),
                "p_expires_in_seconds": options.expires_in_secs,
                "p_max_uses": options.max_uses,
            }),
        )
        .await
    }

    async fn list_invites(&self, workspace: WorkspaceId) -> Result<Vec<Invite>, RemoteError> {
        let i: Invites = self
            .rpc("supamerge_list_invites", &json!({"p_workspace": workspace}))
            .await?;
        Ok(i.invites)
    }

    async fn revoke_invite(&self, invite: InviteRef) -> Result<(), RemoteError> {
        let args = match &invite {
            InviteRef::Id(id) => json!({"p_invite": id, "p_code": null}),
            InviteRef::Code(code) => json!({"p_invite": null, "p_code": code}),
        };
        let _: Value = self.rpc("supamerge_revoke_invite", &args).await?;
        Ok(())
    }

    async fn accept_invite(&self, code: &str) -> Result<Joined, RemoteError> {
        self.rpc("supamerge_accept_invite", &json!({"p_code": code}))
            .await
    }
}
