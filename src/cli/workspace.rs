//! `supamerge workspace ...`: workspaces, members and invitations on
//! Supabase (or the local gateway), through [`WorkspaceAdmin`].

use std::io::Write;

use clap::{Args, Subcommand};
use serde_json::json;

use super::remote::RemoteArgs;
use super::{write_json, write_line, CliError, OutputMode};
use crate::id::WorkspaceId;
use crate::remote::{InviteOptions, InviteRef, InviteState, MemberRole};

/// Arguments of `workspace`.
#[derive(Debug, Args)]
pub struct WorkspaceArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: WorkspaceCommand,
}

/// A workspace, a user and a role.
#[derive(Debug, Args)]
pub struct MemberArgs {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The user id (the `sub` of their access token; `login` prints it).
    pub user: uuid::Uuid,
    /// Their role: reader, writer or owner.
    #[arg(long, value_parser = parse_role)]
    pub role: MemberRole,
    /// Where.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// A workspace and a user.
#[derive(Debug, Args)]
pub struct UserArgs {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The user id.
    pub user: uuid::Uuid,
    /// Where.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Just a workspace.
#[derive(Debug, Args)]
pub struct WsArgs {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// Where.
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// The subcommands of `workspace`.
#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace (you become its owner); prints its id.
    Create {
        /// Its name.
        #[arg(default_value = "workspace")]
        name: String,
        /// Where.
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Your workspaces, with your role.
    List {
        /// Where.
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// The members of a workspace.
    Members(WsArgs),
    /// Add a member, or change a member's role (owners only).
    AddMember(MemberArgs),
    /// Change a member's role (owners only; the last owner stays an owner).
    SetRole(MemberArgs),
    /// Remove a member (owners only): they can no longer pull or push.
    RemoveMember(UserArgs),
    /// Leave a workspace.
    Leave(WsArgs),
    /// Create an invitation; prints its code (owners: any role, writers: reader or writer).
    Invite {
        /// The workspace.
        workspace: WorkspaceId,
        /// The role a joining user gets: reader, writer or owner.
        #[arg(long, value_parser = parse_role, default_value = "writer")]
        role: MemberRole,
        /// Lifetime: seconds, or a number with s, m, h, d or w (`7d`).
        #[arg(long, value_parser = parse_duration, default_value = "7d")]
        expires: u64,
        /// How many users may join with the code.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Where.
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// The invitations of a workspace (never their codes).
    Invites(WsArgs),
    /// Revoke an invitation, by code or by id (from `invites`).
    Revoke {
        /// The code, or the invitation's id.
        invite: String,
        /// Where.
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Join a workspace with an invitation code.
    Join {
        /// The code.
        code: String,
        /// Where.
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

fn parse_role(s: &str) -> Result<MemberRole, String> {
    s.parse()
        .map_err(|e: crate::remote::InvalidRole| e.to_string())
}

/// `7d`, `12h`, `30m`, `90s`, `2w` or plain seconds.
fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: a number, then s, m, h, d or w"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m, h, d or w)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Runs a `workspace` subcommand.
///
/// # Errors
/// Remote errors ([`CliError::Supamerge`]), bad settings.
pub fn run(a: WorkspaceArgs, mode: OutputMode, out: &mut dyn Write) -> Result<(), CliError> {
    let rt = super::sync::runtime()?;
    let json = mode == OutputMode::Json;
    match a.command {
        WorkspaceCommand::Create { name, remote } => {
            let admin = remote.open()?.admin;
            let id = rt
                .block_on(admin.create_workspace(&name))
                .map_err(crate::Error::from)?;
            if json {
                write_json(out, &json!({"workspace_id": id, "name": name}))
            } else {
                write_line(out, id)
            }
        }
        WorkspaceCommand::List { remote } => {
            let admin = remote.open()?.admin;
            let list = rt
                .block_on(admin.list_workspaces())
                .map_err(crate::Error::from)?;
            if json {
                return write_json(out, &list);
            }
            for w in &list {
                write_line(out, format!("{}\t{}\t{}", w.workspace_id, w.role, w.name))?;
            }
            Ok(())
        }
        WorkspaceCommand::Members(WsArgs { workspace, remote }) => {
            let admin = remote.open()?.admin;
            let list = rt
                .block_on(admin.members(workspace))
                .map_err(crate::Error::from)?;
            if json {
                return write_json(out, &list);
            }
            for m in &list {
                write_line(out, format!("{}\t{}", m.user_id, m.role))?;
            }
            Ok(())
        }
        WorkspaceCommand::AddMember(MemberArgs {
            workspace,
            user,
            role,
            remote,
        }) => {
            let admin = remote.open()?.admin;
            rt.block_on(admin.add_member(workspace, user, role))
                .map_err(crate::Error::from)?;
            member_done(out, json, "added", workspace, user, Some(role))
        }
        WorkspaceCommand::SetRole(MemberArgs {
            workspace,
            user,
            role,
            remote,
        }) => {
            let admin = remote.open()?.admin;
            rt.block_on(admin.set_role(workspace, user, role))
                .map_err(crate::Error::from)?;
            member_done(
                out,
                json,
                "changed the role of",
                workspace,
                user,
                Some(role),
            )
        }
        WorkspaceCommand::RemoveMember(UserArgs {
            workspace,
            user,
            remote,
        }) => {
            let admin = remote.open()?.admin;
            rt.block_on(admin.remove_member(workspace, user))
                .map_err(crate::Error::from)?;
            member_done(out, json, "removed", workspace, user, None)
        }
        WorkspaceCommand::Leave(WsArgs { workspace, remote }) => {
            let admin = remote.open()?.admin;
            rt.block_on(admin.leave_workspace(workspace))
                .map_err(crate::Error::from)?;
            if json {
                write_json(out, &json!({"workspace_id": workspace, "left": true}))
            } else {
                write_line(out, format!("left workspace {workspace}"))
            }
        }
        WorkspaceCommand::Invite {
            workspace,
            role,
            expires,
            uses,
            remote,
        } => {
            let admin = remote.open()?.admin;
            let options = InviteOptions::new(role)
                .with_expiry_secs(expires)
                .with_max_uses(uses);
            let inv = rt
                .block_on(admin.create_invite(workspace, options))
                .map_err(crate::Error::from)?;
            if json {
                return write_json(out, &inv);
            }
            // The code alone on stdout (for `CODE=$(supamerge workspace
            // invite ...)`), the facts on stderr.
            eprintln!(
                "invitation {} to workspace {}: {}, {} use(s), expires {}",
                inv.invite_id, inv.workspace_id, inv.role, inv.max_uses, inv.expires_at
            );
            write_line(out, &inv.code)
        }
        WorkspaceCommand::Invites(WsArgs { workspace, remote }) => {
            let admin = remote.open()?.admin;
            let list = rt
                .block_on(admin.list_invites(workspace))
                .map_err(crate::Error::from)?;
            if json {
                return write_json(out, &list);
            }
            for i in &list {
                let state = match i.state {
                    InviteState::Active => "active",
                    InviteState::Expired => "expired",
                    InviteState::UsedUp => "used_up",
                    InviteState::Revoked => "revoked",
                };
                write_line(
                    out,
                    format!(
                        "{}\t{state}\t{}\t{}/{} uses\texpires {}",
                        i.invite_id, i.role, i.uses, i.max_uses, i.expires_at
                    ),
                )?;
            }
            Ok(())
        }
        WorkspaceCommand::Revoke { invite, remote } => {
            let admin = remote.open()?.admin;
            let r = InviteRef::parse(&invite);
            let by_id = matches!(r, InviteRef::Id(_));
            rt.block_on(admin.revoke_invite(r))
                .map_err(crate::Error::from)?;
            if json {
                write_json(out, &json!({"revoked": true}))
            } else if by_id {
                write_line(out, format!("revoked invitation {invite}"))
            } else {
                write_line(out, "revoked the invitation")
            }
        }
        WorkspaceCommand::Join { code, remote } => {
            let admin = remote.open()?.admin;
            let j = rt
                .block_on(admin.accept_invite(&code))
                .map_err(crate::Error::from)?;
            if json {
                return write_json(out, &j);
            }
            write_line(
                out,
                if j.joined {
                    format!(
                        "joined workspace {:?} ({}) as {}; pull it with `supamerge sync --workspace {}`",
                        j.name, j.workspace_id, j.role, j.workspace_id
                    )
                } else {
                    format!(
                        "already a member of workspace {:?} ({}) as {}",
                        j.name, j.workspace_id, j.role
                    )
                },
            )
        }
    }
}

fn member_done(
    out: &mut dyn Write,
    json: bool,
    verb: &str,
    workspace: WorkspaceId,
    user: uuid::Uuid,
    role: Option<MemberRole>,
) -> Result<(), CliError> {
    if json {
        return write_json(
            out,
            &json!({"workspace_id": workspace, "user_id": user, "role": role}),
        );
    }
    match role {
        Some(r) => write_line(out, format!("{verb} {user} in workspace {workspace}: {r}")),
        None => write_line(out, format!("{verb} {user} from workspace {workspace}")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("2w"), Ok(1_209_600));
        assert!(parse_duration("7y").is_err());
        assert!(parse_duration("d").is_err());
    }
}
