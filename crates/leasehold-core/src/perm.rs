//! Roles and the permissions they carry (DESIGN §1).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Permission {
    #[serde(rename = "license.view")]
    LicenseView,
    #[serde(rename = "license.manage")]
    LicenseManage,
    #[serde(rename = "license.assign")]
    LicenseAssign,
    #[serde(rename = "workspace.admin")]
    WorkspaceAdmin,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::LicenseView => "license.view",
            Permission::LicenseManage => "license.manage",
            Permission::LicenseAssign => "license.assign",
            Permission::WorkspaceAdmin => "workspace.admin",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Manager,
    Assigner,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Manager => "manager",
            Role::Assigner => "assigner",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "owner" => Some(Role::Owner),
            "manager" => Some(Role::Manager),
            "assigner" => Some(Role::Assigner),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }

    pub const ALL: &'static [Role] = &[Role::Owner, Role::Manager, Role::Assigner, Role::Viewer];

    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Owner => &[LicenseView, LicenseManage, LicenseAssign, WorkspaceAdmin],
            Role::Manager => &[LicenseView, LicenseManage, LicenseAssign],
            Role::Assigner => &[LicenseView, LicenseAssign],
            Role::Viewer => &[LicenseView],
        }
    }

    pub fn allows(self, permission: Permission) -> bool {
        self.permissions().contains(&permission)
    }
}

#[cfg(feature = "sqlx")]
crate::text_column!(Role);

/// Which audit events a role reads (DESIGN §11): events about members and API tokens
/// need `workspace.admin`; about webhooks and notification settings, `license.manage`.
/// Everything else (licenses, seats, contacts, applications) any role that reads
/// licenses reads. The default reads the least.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditScope {
    pub members_and_tokens: bool,
    pub notifications: bool,
}

impl AuditScope {
    /// Every event (the workspace's owners, and the server's own reads).
    pub const ALL: AuditScope = AuditScope {
        members_and_tokens: true,
        notifications: true,
    };
}

impl Role {
    pub fn audit_scope(self) -> AuditScope {
        AuditScope {
            members_and_tokens: self.allows(Permission::WorkspaceAdmin),
            notifications: self.allows(Permission::LicenseManage),
        }
    }
}

/// A member as the owner rule sees one: their role, and whether they may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub role: Role,
    pub disabled: bool,
}

impl Standing {
    fn is_active_owner(self) -> bool {
        self.role == Role::Owner && !self.disabled
    }
}

/// Refused: the change would leave the workspace without an owner who can sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastOwner;

/// Whether a member may go from `before` to `after` (`None`: removed) while
/// `other_active_owners` other members are owners who can sign in: a workspace always
/// keeps one, so that someone can still administer it.
pub fn change_member(
    before: Standing,
    after: Option<Standing>,
    other_active_owners: u64,
) -> Result<(), LastOwner> {
    let stays_owner = after.is_some_and(Standing::is_active_owner);
    if before.is_active_owner() && !stays_owner && other_active_owners == 0 {
        return Err(LastOwner);
    }
    Ok(())
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_owners_administer_and_viewers_only_view() {
        assert!(Role::Owner.allows(Permission::WorkspaceAdmin));
        assert!(!Role::Manager.allows(Permission::WorkspaceAdmin));
        assert!(Role::Assigner.allows(Permission::LicenseAssign));
        assert!(!Role::Assigner.allows(Permission::LicenseManage));
        assert_eq!(Role::Viewer.permissions(), &[Permission::LicenseView]);
    }

    #[test]
    fn viewers_read_no_member_token_or_webhook_events() {
        assert_eq!(Role::Owner.audit_scope(), AuditScope::ALL);
        let manager = Role::Manager.audit_scope();
        assert!(manager.notifications && !manager.members_and_tokens);
        for role in [Role::Assigner, Role::Viewer] {
            let scope = role.audit_scope();
            assert!(!scope.notifications && !scope.members_and_tokens, "{role}");
        }
    }

    #[test]
    fn the_last_active_owner_stays_an_owner() {
        let owner = Standing {
            role: Role::Owner,
            disabled: false,
        };
        let demoted = Standing {
            role: Role::Manager,
            disabled: false,
        };
        let disabled = Standing {
            disabled: true,
            ..owner
        };
        assert_eq!(change_member(owner, Some(demoted), 0), Err(LastOwner));
        assert_eq!(change_member(owner, Some(disabled), 0), Err(LastOwner));
        assert_eq!(change_member(owner, None, 0), Err(LastOwner));
        assert_eq!(change_member(owner, Some(owner), 0), Ok(()));
        assert_eq!(change_member(owner, None, 1), Ok(()));
        assert_eq!(change_member(owner, Some(demoted), 1), Ok(()));
        // A disabled owner is not the one who keeps the workspace administrable.
        assert_eq!(change_member(disabled, None, 0), Ok(()));
        assert_eq!(change_member(demoted, None, 0), Ok(()));
    }
}
