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
}
